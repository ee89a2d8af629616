#!/usr/bin/env bash
# Side-by-side CPU per call over TCP: ser and Kamailio as stateful record-routing proxies
# (bench/cfg/stateful-tcp.cfg, bench/kamailio/stateful-tcp.cfg), the SIPp caller over TCP
# (`-t t1`: one connection for every call; `-t tn`: one connection per call), the SIPp callee
# over UDP, everything on 127.0.0.1. The two proxies alternate step by step so both see the
# same machine noise. CPU per call = proxy utime+stime (summed over its processes, from /proc)
# over the caller's run, divided by the successful calls, as ../shared/kamailio-anchors/run.sh.
#
#   bench/compare-tcp.sh [MODES] [RATES]       MODES "t1 tn" (default; u1: a UDP caller, for
#                                              reference; s1, sn: over TLS, below), RATES "200 500 1000"
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 REPEAT=2 SER_BIN=target/release/ser
#
# s1 and sn are t1 and tn with the caller over TLS: Debian's SIPp has no TLS, so SIPp's TCP goes
# through a local stunnel client (stunnel4) that opens a TLS connection to the proxy for each of
# SIPp's connections (sn: one per call, each resuming the TLS session of the one before, as
# stunnel's client does by default) and forwards the bytes as they come, so the proxy sees
# SIPp's own pacing, as in t1 and tn. The proxies run bench/cfg/stateful-tls.cfg and
# bench/kamailio/stateful-tls.cfg (tls:15067 in, udp:15062 out) with the certificate
# bench/tls-cert.sh makes (as for bench/compare-tls.sh), Kamailio with KAM_TLS_CHILDREN (1:
# more crash its TLS, kamailio/kamailio#3791, see bench/compare-tls.sh). stunnel's CPU is not
# counted (it is the caller's, as SIPp's is).
#
# Each step runs in a network namespace of its own (unshare -n: its own loopback, ephemeral
# ports 20000-65000, no TIME_WAIT left by the step before, and no other process on the ports):
# one connection per call at 1000 calls/s leaves 10 000 client sockets in TIME_WAIT a step, and
# SIPp's connect() slows down over them until it misses its timers (measured: SIPp at 90 % system
# time in the second such step of a run in one namespace, whichever proxy it drove).
#
# Needs: kamailio, sip-tester (sipp), root (unshare). Uses an existing release build of ser (SER_BIN).
# Results: bench/results/tcp-<stamp>.csv (procs: the proxy's processes, its `timeout` wrapper
# included) and a ratio table on stdout; SIPp and proxy logs in $WORK.
# Every process it starts runs under `timeout` and is stopped by PID.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
MODES=${1:-"t1 tn"}
RATES=${2:-"200 500 1000"}
SER_SHARDS=${SER_SHARDS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-4}
KAM_TLS_CHILDREN=${KAM_TLS_CHILDREN:-1}
TLSDIR=/tmp/ser-bench/tls   # named in both stateful-tls configurations
REPEAT=${REPEAT:-2}
DUR=${DUR:-10}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
WORK=${WORK:-/tmp/ser-bench}/tcp
RESDIR=$HERE/results
IP=127.0.0.1
PORT=15062
UAS_PORT=15070
UAC_PORT=15090
TLS_PORT=15067     # the proxies' TLS listener (s1, sn)
STUNNEL_PORT=15063 # the stunnel client SIPp connects to (s1, sn)
HZ=$(getconf CLK_TCK)
MAXLIFE=300
mkdir -p "$WORK" "$RESDIR" "$TLSDIR"
"$HERE/tls-cert.sh" "$TLSDIR"
[ -x "$SER_BIN" ] || { echo "no ser binary at $SER_BIN (cargo build --release --bin ser)" >&2; exit 2; }

PIDS_STARTED=()
cleanup() {
  local p
  for p in "${PIDS_STARTED[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for p in "${PIDS_STARTED[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  PIDS_STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tree() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END { q[1] = root; n = 1; i = 1
          while (i <= n) { p = q[i++]; printf "%s ", p
            m = split(kids[p], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }'
}
# "utime stime" ticks summed over the given pids
ticks() {
  local u=0 s=0 p st
  for p in "$@"; do
    st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    st=${st##*) }
    set -- $st
    u=$((u + ${12})); s=$((s + ${13}))
  done
  echo "$u $s"
}
wait_port() { # proto(t|u) port timeout_s
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    ss -Hl"$1"n "sport = :$2" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}
statcol() {
  [ -s "$1" ] || { echo 0; return; }
  awk -F';' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
                          { v = $c } END { print (v == "" ? 0 : v) + 0 }' "$1"
}

start_proxy() { # which id mode
  local log=$WORK/proxy-$2.log cfg=stateful-tcp children=$KAM_CHILDREN mem=1024 tport=$PORT
  case $3 in s1 | sn) cfg=stateful-tls children=$KAM_TLS_CHILDREN mem=2048 tport=$TLS_PORT ;; esac
  rm -f "$WORK/kam.pid"
  if [ "$1" = ser ]; then
    timeout -k 5 "$MAXLIFE" "$SER_BIN" -f "$HERE/cfg/$cfg.cfg" -n "$SER_SHARDS" -E -D >"$log" 2>&1 &
  else
    timeout -k 5 "$MAXLIFE" kamailio -f "$HERE/kamailio/$cfg.cfg" -A "CHILDREN=$children" \
      -DD -E -m "$mem" -M 32 -w "$WORK" -Y "$WORK" -P "$WORK/kam.pid" >"$log" 2>&1 &
  fi
  PROXY_PID=$!
  PIDS_STARTED+=("$PROXY_PID")
  wait_port t "$tport" 15 && wait_port u "$PORT" 5 || { echo "proxy did not listen on $tport, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  sleep 0.5
}
start_stunnel() { # id: a TLS client on $STUNNEL_PORT for SIPp, to the proxy's TLS port
  local conf=$WORK/stunnel-$1.conf
  cat >"$conf" <<EOT
foreground = yes
syslog = no
pid =
debug = 6
output = $WORK/stunnel-$1.log
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[sip]
client = yes
accept = $IP:$STUNNEL_PORT
connect = $IP:$TLS_PORT
verifyChain = no
TIMEOUTclose = 0
EOT
  timeout -k 5 "$MAXLIFE" stunnel "$conf" >"$WORK/stunnel-$1.stderr" 2>&1 &
  PIDS_STARTED+=("$!")
  wait_port t $STUNNEL_PORT 10 || { echo "stunnel did not listen, see $WORK/stunnel-$1.log" >&2; exit 1; }
}
start_uas() {
  timeout -k 5 "$MAXLIFE" sipp -sf "$ANCHORS/scen/uas-call.xml" -i $IP -p $UAS_PORT -nostdin \
    -buff_size 4194304 -trace_stat -stf "$WORK/uas-$1.csv" -fd 1 \
    -trace_err -error_file "$WORK/uas-$1-err.log" >/dev/null 2>"$WORK/uas-$1.stderr" &
  PIDS_STARTED+=("$!")
  wait_port u $UAS_PORT 10 || { echo "UAS did not bind" >&2; exit 1; }
}

if [ "${1:-}" = --step ]; then   # one step, inside its own network namespace
  shift
  ip link set lo up
  sysctl -qw net.ipv4.ip_local_port_range="20000 65000"
  CSV=$1; shift
fi
stamp=$(date +%Y%m%d-%H%M%S)
CSV=${CSV:-$RESDIR/tcp-$stamp.csv}
[ -s "$CSV" ] || echo "proxy,procs,mode,rate,rep,calls,created,ok,failed,retrans_uac,retrans_uas,unexp_uac,unexp_uas,wall_s,proxy_user_s,proxy_sys_s,proxy_us_per_call,user_us_per_call,sys_us_per_call,pass" >"$CSV"

step() { # proxy mode rate rep
  local P=$1 M=$2 R=$3 rep=$4 N=$(( $3 * DUR )) id="$1-$2-r$3-$4"
  cleanup
  rm -f "$WORK"/*-"$id".* "$WORK"/*-"$id"-*
  start_proxy "$P" "$id" "$M"
  start_uas "$id"
  local target=$IP:$PORT transport=$M
  case $M in
    s1 | sn) start_stunnel "$id"; target=$IP:$STUNNEL_PORT transport=t${M#s} ;;
  esac
  sleep 0.5
  local ppids u0 s0 u1 s1
  ppids=$(tree "$PROXY_PID")
  read -r u0 s0 < <(ticks $ppids)
  /usr/bin/time -f "%e %U %S" -o "$WORK/uac-$id.time" \
    timeout -k 5 $(( N / R + 60 )) sipp -sf "$ANCHORS/scen/uac-call.xml" "$target" -t "$transport" -i $IP -p $UAC_PORT \
      -s test -r "$R" -m "$N" -nostdin -max_socket 15000 \
      -timeout $(( N / R + 45 ))s -timeout_error -recv_timeout 5000 -buff_size 4194304 \
      -trace_stat -stf "$WORK/uac-$id.csv" -fd 1 -trace_err -error_file "$WORK/uac-$id-err.log" \
      >/dev/null 2>"$WORK/uac-$id.stderr"
  local rc=$?
  read -r u1 s1 < <(ticks $ppids)
  sleep 1.2   # one more UAS stat dump
  local s=$WORK/uac-$id.csv us=$WORK/uas-$id.csv
  local created ok failed rtu rts unu uns wall
  created=$(statcol "$s" "TotalCallCreated"); ok=$(statcol "$s" "SuccessfulCall(C)")
  failed=$(statcol "$s" "FailedCall(C)"); rtu=$(statcol "$s" "Retransmissions(C)")
  unu=$(statcol "$s" "FailedUnexpectedMessage(C)")
  rts=$(statcol "$us" "Retransmissions(C)"); uns=$(statcol "$us" "FailedUnexpectedMessage(C)")
  wall=$(awk '{print $1}' "$WORK/uac-$id.time" 2>/dev/null | tail -1)
  local line
  line=$(awk -v P="$P" -v procs="$(echo $ppids | wc -w)" -v M="$M" -v R="$R" -v rep="$rep" -v N="$N" \
      -v created="$created" -v ok="$ok" -v failed="$failed" -v rtu="$rtu" -v rts="$rts" -v unu="$unu" -v uns="$uns" \
      -v wall="${wall:-0}" -v u0="$u0" -v u1="$u1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" -v rc="$rc" 'BEGIN {
      us = (u1 - u0) / hz; ss = (s1 - s0) / hz
      per = ok > 0 ? 1e6 * (us + ss) / ok : 0; pu = ok > 0 ? 1e6 * us / ok : 0; ps = ok > 0 ? 1e6 * ss / ok : 0
      pass = (rc == 0 && created >= N && ok >= N && unu + uns == 0 && wall < N / R + 5) ? "PASS" : "FAIL"
      printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%.2f,%.2f,%.1f,%.1f,%.1f,%s\n", P, procs, M, R, rep, N,
        created, ok, failed, rtu, rts, unu, uns, wall, us, ss, per, pu, ps, pass }')
  echo "$line" >>"$CSV"
  echo "$line"
  cleanup
  sleep 1
}

if [ "$#" -eq 4 ] && [ -n "${STEP_MODE:-}" ]; then step "$@"; exit 0; fi

echo "# $(date -u +%FT%TZ) ser $SER_BIN -n $SER_SHARDS | $(kamailio -v 2>/dev/null | head -1) children=tcp_children=$KAM_CHILDREN (over TLS: $KAM_TLS_CHILDREN) | $(stunnel -version 2>&1 | grep -m1 "^stunnel" || echo no stunnel) | dur ${DUR}s"
head -1 "$CSV"
for ((i = 1; i <= REPEAT; i++)); do
  for M in $MODES; do
    for R in $RATES; do
      for P in kamailio ser; do
        STEP_MODE=1 unshare -n -- "$0" --step "$CSV" "$P" "$M" "$R" "$i"
      done
    done
  done
done
echo
echo "results: $CSV"
echo
# Ratio table: repetition i of ser against repetition i of Kamailio (they ran back to back).
# A step that FAILed (not every call completed, unexpected messages, or the run took longer
# than it should) is marked "*" and left out of the means.
echo "| mode | rate | Kamailio µs/call (runs) | ser µs/call (runs) | ratio ser/Kamailio (runs) | ratio of means | Kamailio user+sys | ser user+sys | failed calls K / ser |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F, 'NR > 1 {
    k = $3 SUBSEP $4; keys[k] = 1; w = ($1 == "ser") ? "s" : "k"
    v[w, k, $5] = $17; pass[w, k, $5] = $20; usr[w, k] += $18; sys[w, k] += $19; cnt[w, k]++
    fl[w, k] = fl[w, k] (fl[w, k] == "" ? "" : "/") $9; if ($5 > maxrep) maxrep = $5 }
  END {
    for (k in keys) {
      split(k, a, SUBSEP); kl = sl = rl = ""; ks = kc = ss = sc = 0
      for (i = 1; i <= maxrep; i++) {
        kv = (("k", k, i) in v) ? v["k", k, i] : -1; sv = (("s", k, i) in v) ? v["s", k, i] : -1
        kx = (kv >= 0 && pass["k", k, i] != "PASS") ? "*" : ""; sx = (sv >= 0 && pass["s", k, i] != "PASS") ? "*" : ""
        kl = kl (i > 1 ? " / " : "") (kv >= 0 ? sprintf("%.0f", kv) kx : "-")
        sl = sl (i > 1 ? " / " : "") (sv >= 0 ? sprintf("%.0f", sv) sx : "-")
        rl = rl (i > 1 ? " / " : "") ((kv > 0 && sv >= 0) ? sprintf("%.2f", sv / kv) : "-")
        if (kv >= 0 && kx == "") { ks += kv; kc++ }
        if (sv >= 0 && sx == "") { ss += sv; sc++ }
      }
      km = kc ? ks / kc : -1; sm = sc ? ss / sc : -1
      printf "| %s | %s | %s | %s | %s | %s | %.0f+%.0f | %.0f+%.0f | %s / %s |\n", a[1], a[2], kl, sl, rl,
        ((km > 0 && sm >= 0) ? sprintf("**%.2f**", sm / km) : "-"),
        usr["k", k] / cnt["k", k], sys["k", k] / cnt["k", k], usr["s", k] / cnt["s", k], sys["s", k] / cnt["s", k],
        fl["k", k], fl["s", k]
    }
  }' "$CSV" | sort -t'|' -k2,2 -k3,3n
