#!/usr/bin/env bash
# ser against Kamailio over TLS (and TCP), the server's cost per operation, with
# bench/stream-load.py as the client (Debian's SIPp has no TLS). Both servers answer every
# request statelessly (sl_send_reply 200) on tcp:127.0.0.1:15066 and tls:127.0.0.1:15067
# (bench/cfg/options-tls.cfg, bench/kamailio/options-tls.cfg), with the same ECDSA P-256
# certificate made here under /tmp/ser-bench/tls. The two alternate test by test.
#
#   bench/compare-tls.sh [TESTS]      TESTS: any of
#     requests     OPTIONS over TLS at fixed rates (RATES, default "1000 3000") on CONNS (100)
#                  connections opened beforehand: server CPU per request
#     tcprequests  the same over TCP, for reference
#     handshakes   connect + full TLS handshake + close, as fast as PROCS (2) Python processes go,
#                  then paced at HS_RATE (100) a second; and plain TCP connect + close, paced
#     resumption   connect + handshake + one OPTIONS + close at HS_RATE a second, full and
#                  resumed (the TLS 1.3 ticket of the worker's previous connection)
#     memory       IDLE (10000) idle connections held, TCP then TLS, fresh and after one OPTIONS
#                  each: server PSS per connection (Kamailio: summed over its processes)
#     calls        full calls (INVITE/100/180/200/ACK/BYE/200, as the anchors' uac-call.xml) over
#                  TLS through a stateful record-routing proxy (bench/cfg/stateful-tls.cfg,
#                  bench/kamailio/stateful-tls.cfg: tls:15067 in, udp:15062 out) to a SIPp UAS
#                  over UDP (../shared/kamailio-anchors/scen/uas-call.xml on udp:15070), at
#                  CALL_RATES (default "200 500") calls/s: t1, one TLS connection for all calls
#                  (one client process), and tn, a connection per call resuming the TLS 1.3
#                  session of the client process's previous connection (CALL_PROCS, 2, processes)
#   default: "requests tcprequests handshakes resumption memory" (calls only when named)
#   SER_SHARDS=2 KAM_CHILDREN=1 DUR=10 REPEAT=2 SER_BIN=target/release/ser
#
# Each server run is in a network namespace of its own (unshare -n; ephemeral ports
# 20000-65000), so TIME_WAIT from one test never slows the next and nothing else shares the
# ports. Results: bench/results/tls-<stamp>.jsonl (one JSON object per measurement) and tables.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TESTS=${1:-"requests tcprequests handshakes resumption memory"}
SER_SHARDS=${SER_SHARDS:-2}
# Kamailio 5.6.3 (Debian 12) with OpenSSL 3.0 corrupts its shared memory and crashes under
# concurrent TLS handshakes when several processes do TLS (children=tcp_children=4: "qm_free():
# BUG: freeing already freed pointer ... tls_init.c: ser_free", then a child killed by signal 6
# or 11, within a few hundred handshakes; kamailio/kamailio#3791; rand_engine=cryptorand does
# not help). With one TCP reader (CHILDREN=1) it holds, so that is the default here.
KAM_CHILDREN=${KAM_CHILDREN:-1}
REPEAT=${REPEAT:-2}
DUR=${DUR:-10}
RATES=${RATES:-"1000 3000"}
CONNS=${CONNS:-100}
HS_RATE=${HS_RATE:-100}
PROCS=${PROCS:-2}
IDLE=${IDLE:-10000}
CALL_RATES=${CALL_RATES:-"200 500"}
CALL_PROCS=${CALL_PROCS:-2}
ANCHORS=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
WORK=${WORK:-/tmp/ser-bench}/tls
TLSDIR=/tmp/ser-bench/tls   # named in both configurations
RESDIR=$HERE/results
MAXLIFE=600
mkdir -p "$WORK" "$RESDIR" "$TLSDIR"
[ -x "$SER_BIN" ] || { echo "no ser binary at $SER_BIN (cargo build --release --bin ser)" >&2; exit 2; }

"$HERE/tls-cert.sh" "$TLSDIR"

PIDS_STARTED=()
cleanup() {
  local p
  for p in "${PIDS_STARTED[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for p in "${PIDS_STARTED[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  PIDS_STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port timeout_s [proto: t (default) or u]
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ss -Hl"${3:-t}"n "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

# Inside a fresh namespace: start one server, run stream-load.py with the rest of the
# arguments, append its JSON (with the server's name) to $OUT, stop the server.
if [ "${1:-}" = --inside ]; then
  shift
  OUT=$1 P=$2 LABEL=$3; shift 3
  ip link set lo up
  sysctl -qw net.ipv4.ip_local_port_range="20000 65000"
  ulimit -n "$(ulimit -Hn)"   # 20000 here; 10000 idle connections need them
  ulimit -c 0                 # a crashing Kamailio would dump its 2 GB of shared memory
  log=$WORK/server-$P-$LABEL.log
  rm -f "$WORK/kam.pid"
  CFG=${CFG:-options-tls}   # stateful-tls for the calls
  if [ "$P" = ser ]; then
    timeout -k 5 "$MAXLIFE" "$SER_BIN" -f "$HERE/cfg/$CFG.cfg" -n "$SER_SHARDS" -E -D >"$log" 2>&1 &
  else
    timeout -k 5 "$MAXLIFE" kamailio -f "$HERE/kamailio/$CFG.cfg" -A "CHILDREN=$KAM_CHILDREN" \
      -DD -E -m 2048 -M 32 -w "$WORK" -Y "$WORK" -P "$WORK/kam.pid" >"$log" 2>&1 &
  fi
  tpid=$!
  PIDS_STARTED+=("$tpid")
  if [ "$CFG" = options-tls ]; then
    wait_port 15067 15 && wait_port 15066 5
  else
    wait_port 15067 15 && wait_port 15062 5 u
  fi || { echo "$P did not listen, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  uas=
  if [ "$CFG" = stateful-tls ]; then   # the callee, a SIPp UAS over UDP
    uas=$WORK/uas-$P-$LABEL
    rm -f "$uas".*
    timeout -k 5 "$MAXLIFE" sipp -sf "$ANCHORS/scen/uas-call.xml" -i 127.0.0.1 -p 15070 -nostdin \
      -buff_size 4194304 -trace_stat -stf "$uas.csv" -fd 1 \
      -trace_err -error_file "$uas-err.log" >/dev/null 2>"$uas.stderr" &
    PIDS_STARTED+=("$!")
    wait_port 15070 10 u || { echo "UAS did not bind, see $uas.stderr" >&2; exit 1; }
  fi
  sleep 1
  spid=$(ps -o pid= --ppid "$tpid" | tr -d ' ' | head -1)   # the server under `timeout`
  r=$(timeout "$MAXLIFE" python3 "$HERE/stream-load.py" "$@" --pid "$spid" --label "$LABEL")
  [ -n "$uas" ] && sleep 1.2   # one more UAS stat dump
  cleanup
  if [ -n "$uas" ]; then   # the UAS's view: retransmissions and unexpected messages
    uasstat() { awk -F';' -v want="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
                                       { v = $c } END { print (v == "" ? 0 : v) + 0 }' "$uas.csv" 2>/dev/null || echo 0; }
    r=$(echo "$r" | sed "s/^{/{\"uas_retrans\": $(uasstat 'Retransmissions(C)'), \"uas_unexpected\": $(uasstat 'FailedUnexpectedMessage(C)'), /")
  fi
  # Memory-corruption reports and crashed children (Kamailio), panics (ser), in the log.
  # (Kamailio's "queue full" CRITICALs, its one TCP reader behind, and the note that core
  # dumps are off, are left out.)
  crit=$(grep -E 'CRITICAL|panicked' "$log" | grep -c -v -e set_core_dump -e 'queue full')
  dead=$(grep -c -E 'by a signal|core was generated' "$log")
  qfull=$(grep -c 'queue full' "$log")
  echo "$r" | sed "s/^{/{\"server\": \"$P\", \"server_critical_lines\": $crit, \"server_children_killed\": $dead, \"server_queue_full_lines\": $qfull, /" | tee -a "$OUT"
  exit 0
fi

stamp=$(date +%Y%m%d-%H%M%S)
OUT=$RESDIR/tls-$stamp.jsonl
: >"$OUT"
run() { # label, stream-load args...: both servers, Kamailio first (CFG: the configuration)
  local P
  for P in kamailio ser; do
    unshare -n -- "$0" --inside "$OUT" "$P" "$@"
  done
}
echo "# $(date -u +%FT%TZ) ser $SER_BIN -n $SER_SHARDS | $(kamailio -v 2>/dev/null | head -1) children=tcp_children=$KAM_CHILDREN | $(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)') client"
for ((i = 1; i <= REPEAT; i++)); do
  for T in $TESTS; do
    case $T in
      requests)
        for R in $RATES; do
          run "tls-requests-r$R-$i" requests --target 127.0.0.1:15067 --tls --conns "$CONNS" --procs "$PROCS" --rate "$R" --dur "$DUR"
        done ;;
      tcprequests)
        for R in $RATES; do
          run "tcp-requests-r$R-$i" requests --target 127.0.0.1:15066 --conns "$CONNS" --procs "$PROCS" --rate "$R" --dur "$DUR"
        done ;;
      handshakes)
        run "tls-handshakes-max-$i" handshakes --target 127.0.0.1:15067 --tls --procs "$PROCS" --dur "$DUR"
        run "tls-handshakes-r$HS_RATE-$i" handshakes --target 127.0.0.1:15067 --tls --procs "$PROCS" --dur "$DUR" --rate "$HS_RATE"
        run "tcp-connects-r$HS_RATE-$i" handshakes --target 127.0.0.1:15066 --procs "$PROCS" --dur "$DUR" --rate "$HS_RATE" ;;
      resumption)
        run "tls-full+request-r$HS_RATE-$i" handshakes --target 127.0.0.1:15067 --tls --request --procs "$PROCS" --dur "$DUR" --rate "$HS_RATE"
        run "tls-resumed+request-r$HS_RATE-$i" handshakes --target 127.0.0.1:15067 --tls --resume --procs "$PROCS" --dur "$DUR" --rate "$HS_RATE" ;;
      memory)
        [ "$i" -gt 1 ] && continue   # memory is deterministic enough: once
        run "idle-tcp" idle --target 127.0.0.1:15066 --conns "$IDLE" --procs 4 --hold 5
        run "idle-tls" idle --target 127.0.0.1:15067 --tls --conns "$IDLE" --procs 4 --hold 5
        run "idle-tcp-after-request" idle --target 127.0.0.1:15066 --request --conns "$IDLE" --procs 4 --hold 5
        run "idle-tls-after-request" idle --target 127.0.0.1:15067 --tls --request --conns "$IDLE" --procs 4 --hold 5 ;;
      calls)
        for R in $CALL_RATES; do
          CFG=stateful-tls run "tls-calls-t1-r$R-$i" calls --target 127.0.0.1:15067 --tls --procs 1 --rate "$R" --dur "$DUR"
          CFG=stateful-tls run "tls-calls-tn-resumed-r$R-$i" calls --target 127.0.0.1:15067 --tls --per-call-connection \
            --procs "$CALL_PROCS" --rate "$R" --dur "$DUR"
        done ;;
      *) echo "unknown test $T" >&2; exit 2 ;;
    esac
  done
done
echo
echo "results: $OUT"
python3 - "$OUT" <<'EOF'
import json, sys, re, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ops = collections.OrderedDict()
mem = collections.OrderedDict()
calls = collections.OrderedDict()
for r in rows:
    key = re.sub(r"-\d+$", "", r["label"])
    if r["mode"] == "idle":
        mem.setdefault(key, {})[r["server"]] = r
    elif r["mode"] == "calls":
        calls.setdefault(key, {}).setdefault(r["server"], []).append(r)
    else:
        ops.setdefault(key, {}).setdefault(r["server"], []).append(r)
if ops:
    print("\n| test | Kamailio µs/op (runs) | ser µs/op (runs) | ratio of means ser/Kamailio | ops/s achieved K / ser | server CPU % K / ser | errors K / ser | resumed K / ser | CRITICAL log lines, children killed: K / ser |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, v in ops.items():
        K, S = v.get("kamailio", []), v.get("ser", [])
        f = lambda xs: " / ".join(f"{x['server_us_per_op']:.0f}" if x.get("server_us_per_op") else "-" for x in xs)
        m = lambda xs: sum(x["server_us_per_op"] for x in xs if x.get("server_us_per_op")) / max(1, len([x for x in xs if x.get("server_us_per_op")]))
        g = lambda xs, c: "/".join(str(x.get(c, "-")) for x in xs)
        ratio = m(S) / m(K) if K and S and m(K) else float("nan")
        print(f"| {k} | {f(K)} | {f(S)} | **{ratio:.2f}** | {g(K,'rate_per_s')} / {g(S,'rate_per_s')} | {g(K,'server_cpu_pct')} / {g(S,'server_cpu_pct')} | {g(K,'errors')} / {g(S,'errors')} | {g(K,'resumed')} / {g(S,'resumed')} | {g(K,'server_critical_lines')},{g(K,'server_children_killed')} / {g(S,'server_critical_lines')},{g(S,'server_children_killed')} |")
if calls:
    # Full calls over TLS: µs of server CPU per completed call, rep by rep; a run where a call
    # failed, the UAS saw an unexpected message, or fewer than 95 % of the target calls/s were
    # completed is marked "*" and left out of the means.
    def good(x):
        return (x.get("server_us_per_op") and x.get("failed", 1) == 0 and x.get("ok") == x.get("calls")
                and x.get("rate_per_s", 0) >= 0.95 * x.get("target_rate", 0) and x.get("uas_unexpected", 0) == 0)
    def mean(xs):
        v = [x["server_us_per_op"] for x in xs if good(x)]
        return sum(v) / len(v) if v else None
    print("\n| mode | calls/s | Kamailio µs/call (runs) | ser µs/call (runs) | ratio of means ser/Kamailio | calls/s achieved K / ser | completed of started K / ser | TLS resumed of connections K / ser | max start lag ms K / ser | server CPU % K / ser | CRITICAL lines/queue-full lines/children killed K / ser |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, v in calls.items():
        K, S = v.get("kamailio", []), v.get("ser", [])
        m = re.match(r"tls-calls-(t1|tn-resumed)-r(\d+)", k)
        f = lambda xs: " / ".join((f"{x['server_us_per_op']:.0f}" if x.get("server_us_per_op") else "-") + ("" if good(x) else "*") for x in xs)
        g = lambda xs, c: ", ".join(str(x.get(c, "-")) for x in xs)
        of = lambda xs, a, b: ", ".join(f"{x.get(a)} of {x.get(b)}" for x in xs)
        crit = lambda xs: ", ".join(f"{x.get('server_critical_lines')}/{x.get('server_queue_full_lines', '?')}/{x.get('server_children_killed')}" for x in xs)
        lag = lambda xs: ", ".join(f"{x.get('lag_ms_max', 0):.0f}" for x in xs)
        mk, ms = mean(K), mean(S)
        ratio = f"**{ms / mk:.2f}**" if mk and ms else "-"
        print(f"| {m.group(1) if m else k} | {m.group(2) if m else ''} | {f(K)} | {f(S)} | {ratio} | {g(K,'rate_per_s')} / {g(S,'rate_per_s')} | "
              f"{of(K, 'ok', 'calls')} / {of(S, 'ok', 'calls')} | {of(K, 'resumed', 'conns')} / {of(S, 'resumed', 'conns')} | "
              f"{lag(K)} / {lag(S)} | "
              f"{g(K,'server_cpu_pct')} / {g(S,'server_cpu_pct')} | {crit(K)} / {crit(S)} |")
if mem:
    print("\n| test | Kamailio PSS before → open (MB) | per conn | ser PSS before → open (MB) | per conn | ser RSS per conn | ratio | open K / ser | idle CPU % K / ser | PSS after close K / ser (MB) | CRITICAL, killed K / ser |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, v in mem.items():
        K, S = v.get("kamailio"), v.get("ser")
        if not K or not S:
            continue
        mb = lambda x: x / 1024
        print(f"| {k} | {mb(K['mem_before']['pss_kb']):.1f} → {mb(K['mem_open']['pss_kb']):.1f} | {K['pss_bytes_per_conn']} B | "
              f"{mb(S['mem_before']['pss_kb']):.1f} → {mb(S['mem_open']['pss_kb']):.1f} | {S['pss_bytes_per_conn']} B | {S['rss_bytes_per_conn']} B | "
              f"**{S['pss_bytes_per_conn'] / K['pss_bytes_per_conn']:.2f}** | {K['open']} / {S['open']} | {K['idle_cpu_pct']} / {S['idle_cpu_pct']} | "
              f"{mb(K['mem_after_close']['pss_kb']):.1f} / {mb(S['mem_after_close']['pss_kb']):.1f} | "
              f"{K.get('server_critical_lines')},{K.get('server_children_killed')} / {S.get('server_critical_lines')},{S.get('server_children_killed')} |")
EOF
