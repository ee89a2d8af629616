#!/usr/bin/env bash
# User-space instructions per stream operation (valgrind --tool=callgrind), ser against
# Kamailio: a repeatable figure beside the CPU-time ratios of compare-tls.sh, which the noisy
# 2-core machine blurs. For each server and test: one run with load and one without (the same
# wall time, started and stopped the same way, instructions counted from the moment the server
# is up: --instr-atstart=no, then callgrind_control -i on for each of its processes);
# instructions per operation =
# (Ir with load - Ir without) / operations completed. Kamailio runs with --trace-children=yes
# (its processes fork, without exec) and its Ir is summed over them; ser runs its portable
# backend (epoll; valgrind does not follow io_uring). Kernel time is not counted.
#
#   bench/callgrind-streams.sh [TESTS]     TESTS: any of full resumed requests tcprequests
#                                          wsregister wsmessage
#   DUR=10 (seconds of load) SER_SHARDS=1 KAM_CHILDREN=1 SER_BIN=target/release/ser
#
# Tests (bench/stream-load.py against bench/cfg/options-tls.cfg, bench/kamailio/options-tls.cfg):
#   full      connect + full TLS 1.3 handshake + one OPTIONS + close, 10/s
#   resumed   the same, resuming the previous connection's session (ticket)
#   requests  OPTIONS over 10 TLS connections opened beforehand, 200/s
#   tcprequests  the same over TCP
#   wsregister   REGISTER refreshes over 20 WebSocket connections opened beforehand, 200/s
#                (bench/cfg/ws.cfg, bench/kamailio/ws.cfg: usrloc in memory, as compare-ws.sh)
#   wsmessage    MESSAGE between the users of those 20 connections (lookup + t_relay), 200/s
# Results: bench/results/callgrind-streams-<stamp>.txt
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TESTS=${1:-"full resumed requests tcprequests"}
DUR=${DUR:-10}
SER_SHARDS=${SER_SHARDS:-1}
KAM_CHILDREN=${KAM_CHILDREN:-1}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
WORK=${WORK:-/tmp/ser-bench}/callgrind
TLSDIR=/tmp/ser-bench/tls
RESDIR=$HERE/results
mkdir -p "$WORK" "$RESDIR"
case " $TESTS " in
  *" full "*|*" resumed "*|*" requests "*|*" tcprequests "*)
    [ -s "$TLSDIR/cert.pem" ] || "$HERE/tls-cert.sh" "$TLSDIR" || exit 2 ;;
esac

if [ "${1:-}" = --inside ]; then   # P TEST LOAD(0|1) -> prints "ops Ir"
  P=$2 T=$3 L=$4
  ip link set lo up
  sysctl -qw net.ipv4.ip_local_port_range="20000 65000"
  ulimit -c 0
  d=$WORK/$P-$T-$L
  rm -rf "$d"; mkdir -p "$d"
  case $T in
    ws*) CFG=ws PORT=15068 ;;
    *) CFG=options-tls PORT=15067 ;;
  esac
  if [ "$P" = ser ]; then
    SER_IO_BACKEND=portable timeout -k 5 600 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/cg.%p" \
      "$SER_BIN" -f "$HERE/cfg/$CFG.cfg" -n "$SER_SHARDS" -E -D >"$d/server.log" 2>&1 &
  else
    timeout -k 5 600 valgrind --tool=callgrind --instr-atstart=no --trace-children=yes --callgrind-out-file="$d/cg.%p" \
      kamailio -f "$HERE/kamailio/$CFG.cfg" -A "CHILDREN=$KAM_CHILDREN" -DD -E -m 256 -M 16 \
      -w "$d" -Y "$d" -P "$d/kam.pid" >"$d/server.log" 2>&1 &
  fi
  tpid=$!
  for ((i = 0; i < 600; i++)); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.2; done
  sleep 3
  spid=$(ps -o pid= --ppid "$tpid" | tr -d ' ' | head -1)
  case $T in
    full) A=(handshakes --target 127.0.0.1:15067 --tls --request --procs 1 --rate 10) ;;
    resumed) A=(handshakes --target 127.0.0.1:15067 --tls --resume --procs 1 --rate 10) ;;
    requests) A=(requests --target 127.0.0.1:15067 --tls --conns 10 --procs 1 --rate 200) ;;
    tcprequests) A=(requests --target 127.0.0.1:15066 --conns 10 --procs 1 --rate 200) ;;
    wsregister) A=(requests --target 127.0.0.1:15068 --ws --ws-method REGISTER --conns 20 --procs 1 --rate 200) ;;
    wsmessage) A=(requests --target 127.0.0.1:15068 --ws --ws-method MESSAGE --conns 20 --procs 1 --rate 200) ;;
  esac
  # Count from here on (start-up left out), in every process of the server.
  for p in $(ps -e -o pid=,ppid= | awk -v r="$spid" '{ k[$2] = k[$2] " " $1 } END { q[1] = r; n = 1; i = 1
      while (i <= n) { p = q[i++]; print p; m = split(k[p], a, " "); for (j = 1; j <= m; j++) q[++n] = a[j] } }'); do
    callgrind_control -i on "$p" >/dev/null 2>&1
  done
  ops=0
  if [ "$L" = 1 ]; then
    ops=$(timeout 300 python3 "$HERE/stream-load.py" "${A[@]}" --dur "$DUR" --pid "$spid" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ok"])')
  else
    sleep "$DUR"
  fi
  kill -TERM "$spid"
  wait "$tpid" 2>/dev/null
  sleep 2   # Kamailio's children write their profiles as they exit
  ir=$(cat "$d"/cg.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')
  echo "$ops $ir"
  exit 0
fi

stamp=$(date +%Y%m%d-%H%M%S)
OUT=$RESDIR/callgrind-streams-$stamp.txt
{
  echo "# $(date -u +%FT%TZ) callgrind, ser $SER_BIN -n $SER_SHARDS | $(kamailio -v | head -1) children=tcp_children=$KAM_CHILDREN | dur ${DUR}s"
  echo "| test | Kamailio ops | Kamailio Ir/op | ser ops | ser Ir/op | ratio ser/Kamailio |"
  echo "|---|---|---|---|---|---|"
} | tee "$OUT"
for T in $TESTS; do
  declare -A per=() n=()
  for P in kamailio ser; do
    read -r _ base < <(unshare -n -- "$0" --inside "$P" "$T" 0)
    read -r ops load < <(unshare -n -- "$0" --inside "$P" "$T" 1)
    n[$P]=$ops
    per[$P]=$(awk -v a="$load" -v b="$base" -v n="$ops" 'BEGIN { printf "%.0f", (n > 0 ? (a - b) / n : 0) }')
    echo "#   $P $T: base $base, load $load, ops $ops" >>"$OUT"
  done
  awk -v t="$T" -v kn="${n[kamailio]}" -v k="${per[kamailio]}" -v sn="${n[ser]}" -v s="${per[ser]}" \
    'BEGIN { printf "| %s | %s | %.0f K | %s | %.0f K | **%.2f** |\n", t, kn, k / 1000, sn, s / 1000, (k > 0 ? s / k : 0) }' | tee -a "$OUT"
  unset per n
done
echo "results: $OUT"
