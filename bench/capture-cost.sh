#!/usr/bin/env bash
# The cost of message capture (capture_file): CPU per call of ser (all its threads, the capture
# writer included) relaying full calls statefully (anchor role b: maxfwd, loose_route,
# record_route, t_relay), without and with capture, alternating, under the same SIPp load.
#
#   bench/capture-cost.sh [RATE] [REPEAT]          e.g. bench/capture-cost.sh 500 2
#   DUR=10 SHARDS=1 BIN=target/release/ser bench/capture-cost.sh 500 2
#
# Ports 15062 (ser), 15070 (UAS), 15090 (UAC), so as not to meet the other bench scripts.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
A=${ANCHORS:-$HERE/../../shared/kamailio-anchors}
R=${1:-500}; REPEAT=${2:-2}; C=$((R * ${DUR:-10})); N=${SHARDS:-1}
BIN=${BIN:-$HERE/../target/release/ser}
W=$(mktemp -d /tmp/ser-capture-cost.XXXXXX)
sed -e "s/^port=5062/port=15062/" -e "s/^children=.*/children=$N/" \
    -e "s/127.0.0.1:5070/127.0.0.1:15070/" "$A/cfg-ser/b-stateful.cfg" > "$W/off.cfg"
{ echo "capture_file = \"$W/sip.pcap\""; cat "$W/off.cfg"; } > "$W/on.cfg"
hz=$(getconf CLK_TCK)
run() { # $1 = off | on
  rm -f "$W"/sip.pcap*
  timeout 120 sipp -sf "$A/scen/uas-call.xml" -i 127.0.0.1 -p 15070 -nostdin -buff_size 4194304 >/dev/null 2>&1 &
  local U=$!
  "$BIN" -f "$W/$1.cfg" -E -D 2>"$W/ser-$1.log" &
  local S=$!
  sleep 0.7
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$S/stat")
  timeout 120 sipp -sf "$A/scen/uac-call.xml" 127.0.0.1:15062 -s test -i 127.0.0.1 -p 15090 \
    -r "$R" -m "$C" -nostdin -timeout 60 -timeout_error -buff_size 4194304 \
    -trace_stat -stf "$W/uac-$1.csv" >/dev/null 2>&1
  local rc=$?
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$S/stat")
  kill -TERM "$S"; wait "$S" 2>/dev/null; kill "$U" 2>/dev/null; wait "$U" 2>/dev/null
  local failed; failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$W/uac-$1.csv")
  local bytes; bytes=$(cat "$W"/sip.pcap* 2>/dev/null | wc -c)
  echo "capture=$1 shards=$N rate=$R calls=$C sipp_rc=$rc failed=$failed:" \
       "$(( ((u1 - u0) + (s1 - s0)) * 1000000 / hz / C )) us/call" \
       "(user $(( (u1 - u0) * 1000000 / hz / C )), sys $(( (s1 - s0) * 1000000 / hz / C )))," \
       "pcap bytes $bytes; $(grep -o 'capture: .*' "$W/ser-$1.log" || true)"
}
for _ in $(seq "$REPEAT"); do run off; run on; done
rm -rf "$W"
