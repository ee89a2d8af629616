#!/usr/bin/env bash
# Where ser's CPU per relayed call goes: user vs system time of the ser process over a SIPp
# call run through the anchors' stateless config (UAC -> ser:5061 -> UAS:5070).
#
#   bench/cpu-split.sh [SHARDS] [RATE]        e.g. bench/cpu-split.sh 2 1000
#   BACKEND=portable bench/cpu-split.sh 2 1000
#   ROLE=b bench/cpu-split.sh 1 1000          # the stateful config (tm + rr), port 5062
#
# Ticks are 10 ms samples of /proc/PID/stat: run 10 s or more for a usable split.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
A=${ANCHORS:-$HERE/../../shared/kamailio-anchors}
N=${1:-2}; R=${2:-1000}; C=$((R * ${DUR:-10}))
case ${ROLE:-a} in
  a) CFG=a-stateless.cfg; PORT=5061 ;;
  b) CFG=b-stateful.cfg;  PORT=5062 ;;
  *) echo "ROLE a or b" >&2; exit 2 ;;
esac
BIN=${BIN:-$HERE/../target/release/ser}
timeout 120 sipp -sf "$A/scen/uas-call.xml" -i 127.0.0.1 -p 5070 -nostdin -buff_size 4194304 >/dev/null 2>&1 &
U=$!
SER_IO_BACKEND=${BACKEND:-auto} "$BIN" -f "$A/cfg-ser/$CFG" -n "$N" -E -D >/dev/null 2>&1 &
S=$!
sleep 0.7
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$S/stat")
timeout 120 sipp -sf "$A/scen/uac-call.xml" 127.0.0.1:$PORT -s test -i 127.0.0.1 -p 5090 -r "$R" -m "$C" \
  -nostdin -timeout 60 -timeout_error -buff_size 4194304 >/dev/null 2>&1
rc=$?
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$S/stat")
kill "$S" "$U"; wait 2>/dev/null
hz=$(getconf CLK_TCK)
echo "role=${ROLE:-a} shards=$N rate=$R calls=$C sipp_rc=$rc: user $(( (u1 - u0) * 1000000 / hz / C )) us/call, sys $(( (s1 - s0) * 1000000 / hz / C )) us/call"
