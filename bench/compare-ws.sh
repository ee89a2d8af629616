#!/usr/bin/env bash
# ser against Kamailio over SIP over WebSocket (RFC 7118, plain ws), the server's cost per
# request and its memory per idle connection, with bench/stream-load.py --ws as the client
# (Debian's SIPp has no WebSocket). Both servers are a registrar (usrloc in memory) and a proxy
# on ws:127.0.0.1:15068 (+ udp:15068): bench/cfg/ws.cfg, bench/kamailio/ws.cfg (Kamailio 5.6's
# websocket + xhttp + nathelper recipe). The two alternate test by test.
#
#   bench/compare-ws.sh [TESTS]   TESTS: any of
#     register   REGISTER refreshes at fixed rates (RATES, default "1000 3000") over CONNS (100)
#                WebSocket connections opened beforehand, each its own user with a `.invalid`
#                Contact (;transport=ws, Expires 600): server CPU per REGISTER
#     message    MESSAGE from each connection's user to the next one's (all registered over ws
#                before the window), at RATES over CONNS connections: lookup + t_relay over the
#                callee's WebSocket, its 200 relayed back; server CPU per MESSAGE transaction
#     memory     IDLE (10000) upgraded connections held, without and with one REGISTER each (as a
#                browser does): server PSS per connection (Kamailio: summed over its processes)
#   default: "register message memory"
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 REPEAT=2 PROCS=2 SER_BIN=target/release/ser
#
# Each server run is in a network namespace of its own (unshare -n; ephemeral ports
# 20000-65000). Results: bench/results/ws-<stamp>.jsonl (one JSON object per measurement) and
# tables.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TESTS=${1:-"register message memory"}
SER_SHARDS=${SER_SHARDS:-2}
# Plain ws has none of the TLS trouble of kamailio#3791 (compare-tls.sh), so Kamailio may have
# more TCP readers; but one keeps up at 3000 MESSAGE/s (p99 under 1 ms, no "queue full") and
# costs it less than four (2026-12-07, 5 s runs, results/ws-20261207-013241.jsonl (c=1) and
# -013307.jsonl (c=4): MESSAGE 96 against 171 µs, REGISTER 38 against 45), so the default is
# children=tcp_children=1, the cheaper for Kamailio.
KAM_CHILDREN=${KAM_CHILDREN:-1}
REPEAT=${REPEAT:-2}
DUR=${DUR:-10}
RATES=${RATES:-"1000 3000"}
CONNS=${CONNS:-100}
PROCS=${PROCS:-2}
IDLE=${IDLE:-10000}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
WORK=${WORK:-/tmp/ser-bench}/ws
RESDIR=$HERE/results
MAXLIFE=600
mkdir -p "$WORK" "$RESDIR"
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

wait_port() { # port timeout_s [proto: t (default) or u]
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ss -Hl"${3:-t}"n "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

# Inside a fresh namespace: start one server, run stream-load.py with the rest of the
# arguments, append its JSON (with the server's name and what its log says) to $OUT, stop it.
if [ "${1:-}" = --inside ]; then
  shift
  OUT=$1 P=$2 LABEL=$3; shift 3
  ip link set lo up
  sysctl -qw net.ipv4.ip_local_port_range="20000 65000"
  ulimit -n "$(ulimit -Hn)"   # 10000 idle connections need them
  ulimit -c 0
  log=$WORK/server-$P-$LABEL.log
  if [ "$P" = ser ]; then
    timeout -k 5 "$MAXLIFE" "$SER_BIN" -f "$HERE/cfg/ws.cfg" -n "$SER_SHARDS" -E -D >"$log" 2>&1 &
  else
    timeout -k 5 "$MAXLIFE" kamailio -f "$HERE/kamailio/ws.cfg" -A "CHILDREN=$KAM_CHILDREN" \
      -DD -E -m 2048 -M 32 -w "$WORK" -Y "$WORK" -P "$WORK/kam.pid" >"$log" 2>&1 &
  fi
  tpid=$!
  PIDS_STARTED+=("$tpid")
  { wait_port 15068 15 && wait_port 15068 5 u; } || { echo "$P did not listen, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  sleep 1
  spid=$(ps -o pid= --ppid "$tpid" | tr -d ' ' | head -1)   # the server under `timeout`
  r=$(timeout "$MAXLIFE" python3 "$HERE/stream-load.py" "$@" --ws --pid "$spid" --label "$LABEL")
  cleanup
  # What the server logged beyond its start and stop notices: ser's warnings and errors (and
  # panics), Kamailio's errors and CRITICALs (its "receive_fd(): EOF" at shutdown, the note
  # that core dumps are off, and "queue full", counted apart, left out).
  if [ "$P" = ser ]; then
    errs=$(grep -c -E 'WARN|ERROR|panicked' "$log")
  else
    errs=$(grep -E 'ERROR|CRITICAL' "$log" | grep -c -v -e set_core_dump -e 'receive_fd(): EOF' -e 'queue full')
  fi
  qfull=$(grep -c 'queue full' "$log")
  echo "$r" | sed "s/^{/{\"server\": \"$P\", \"server_log_errors\": $errs, \"server_queue_full_lines\": $qfull, /" | tee -a "$OUT"
  exit 0
fi

stamp=$(date +%Y%m%d-%H%M%S)
OUT=$RESDIR/ws-$stamp.jsonl
: >"$OUT"
run() { # label, stream-load args...: both servers, Kamailio first
  local P
  for P in kamailio ser; do
    unshare -n -- "$0" --inside "$OUT" "$P" "$@"
  done
}
echo "# $(date -u +%FT%TZ) ser $SER_BIN -n $SER_SHARDS | $(kamailio -v 2>/dev/null | head -1) children=tcp_children=$KAM_CHILDREN | CONNS=$CONNS PROCS=$PROCS DUR=$DUR"
for ((i = 1; i <= REPEAT; i++)); do
  for T in $TESTS; do
    case $T in
      register|message)
        M=$(echo "$T" | tr a-z A-Z)
        for R in $RATES; do
          run "ws-$T-r$R-$i" requests --ws-method "$M" --target 127.0.0.1:15068 --conns "$CONNS" --procs "$PROCS" --rate "$R" --dur "$DUR"
        done ;;
      memory)
        [ "$i" -gt 1 ] && continue   # memory is deterministic enough: once
        run "idle-ws" idle --target 127.0.0.1:15068 --conns "$IDLE" --procs 4 --hold 5
        run "idle-ws-registered" idle --target 127.0.0.1:15068 --request --conns "$IDLE" --procs 4 --hold 5 ;;
      *) echo "unknown test $T" >&2; exit 2 ;;
    esac
  done
done
echo
echo "results: $OUT"
python3 "$HERE/compare-ws-table.py" "$OUT"
