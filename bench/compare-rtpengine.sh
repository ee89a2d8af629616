#!/usr/bin/env bash
# Calls through a stateful proxy with rtpengine_manage() on every call (issue 19): ser's
# rtpengine module against Kamailio's, both driving the same rtpengine, under the same SIPp
# load, with the shared anchor harness (../shared/kamailio-anchors/run.sh, role b: SIPp UAC ->
# proxy -> SIPp UAS on 127.0.0.1; proxy CPU = utime+stime from /proc over the UAC run).
# rtpengine's own CPU over each run (utime+stime of its process, per call) is shown beside:
# each call costs it an offer, an answer and a delete (signalling only; no RTP is sent).
#
#   bench/compare-rtpengine.sh [RATES]       default "200 500"
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 REPEAT=1
#
# Needs: kamailio with its rtpengine module, rtpengine (Debian rtpengine-daemon), sip-tester
# (sipp), sysstat (pidstat); builds ser in release mode. rtpengine is started here on
# 127.0.0.1:22222 (userspace forwarding, ports 40000-59999) and stopped by PID.
# Results: bench/results/b-rtpe-<proxy>-<stamp>.csv and a table on stdout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
RATES=${1:-"200 500"}
SER_SHARDS=${SER_SHARDS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-4}
REPEAT=${REPEAT:-1}
export DUR=${DUR:-10}
export RESDIR=$HERE/results
export WORK=${WORK:-/tmp/ser-bench}
mkdir -p "$RESDIR" "$WORK"
HZ=$(getconf CLK_TCK)

(cd "$ROOT" && cargo build --release --quiet --bin ser)
SER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ser

rtpengine --config-file=none --foreground --log-stderr --table=-1 --interface=127.0.0.1 \
  --listen-ng=127.0.0.1:22222 --port-min=40000 --port-max=59999 --delete-delay=0 \
  --log-level=3 >"$WORK/rtpengine.log" 2>&1 &
RTPE=$!
trap 'kill $RTPE 2>/dev/null; wait $RTPE 2>/dev/null' EXIT
sleep 1
kill -0 $RTPE || { echo "rtpengine did not start:" >&2; cat "$WORK/rtpengine.log" >&2; exit 1; }

# utime+stime of rtpengine in clock ticks (fields 14 and 15 of /proc/PID/stat).
rtpe_ticks() { awk '{ print $14 + $15 }' "/proc/$RTPE/stat"; }

stamp=$(date +%Y%m%d-%H%M%S)
TABLE=$WORK/rtpe-table-$stamp.txt
: >"$TABLE"
# One run of run.sh role b for a proxy; appends "proxy rate us/call(proxy) pass rtpe_us/call".
run_one() {
  local name=$1 rate=$2 start=$3 tag=rtpe-$1-$stamp
  local t0 t1 line
  t0=$(rtpe_ticks)
  PROXY_START="$start" CHILDREN=${4} TAG=$tag RATES="$rate" "$ANCHORS/run.sh" b | grep -v '^#' || true
  t1=$(rtpe_ticks)
  line=$(awk -F, -v r="$rate" 'FNR > 1 && $4 == r { l = $0 } END { print l }' "$RESDIR/b-$tag.csv" 2>/dev/null || true)
  local ok us pass
  ok=$(echo "$line" | awk -F, '{ print $9 + 0 }')
  us=$(echo "$line" | awk -F, '{ print $21 }')
  pass=$(echo "$line" | awk -F, '{ print $22 }')
  local rus="-"
  if [ "${ok:-0}" -gt 0 ]; then
    rus=$(awk -v d="$((t1 - t0))" -v hz="$HZ" -v n="$ok" 'BEGIN { printf "%.0f", d / hz * 1e6 / n }')
  fi
  echo "$name $rate ${us:--} ${pass:--} $rus $ok" >>"$TABLE"
}

for ((i = 1; i <= REPEAT; i++)); do
  for R in $RATES; do
    # Alternate the two proxies rate by rate so both see the same machine noise.
    run_one kamailio "$R" "kamailio -f $HERE/kamailio/rtpengine.cfg -A CHILDREN=$KAM_CHILDREN -DD -E -m 1024 -M 16 -w $WORK -Y $WORK -P $WORK/kam.pid" "$KAM_CHILDREN"
    run_one ser "$R" "$SER_BIN -f $HERE/cfg/rtpengine.cfg -n $SER_SHARDS -E -D" "$SER_SHARDS"
  done
done
echo
echo "Each cell: the runs in order (a run that FAILed run.sh's rule is marked *); ratio of the means of the PASS runs."
echo
echo "| rate | kamailio us/call | ser us/call | ratio ser/kam | rtpengine us/call in kamailio's runs | rtpengine us/call in ser's runs | calls ok kam / ser |"
echo "|---|---|---|---|---|---|---|"
awk '
  function add(a, r, v) { a[r] = (r in a) ? a[r] " / " v : v }
  {
    mark = ($4 == "PASS") ? "" : "*"
    if ($1 == "kamailio") { add(k, $2, $3 mark); add(kr, $2, $5); add(kn, $2, $6); if (mark == "") { ks[$2] += $3; kc[$2]++ } }
    else                  { add(s, $2, $3 mark); add(sr, $2, $5); add(sn, $2, $6); if (mark == "") { ss[$2] += $3; sc[$2]++ } }
    rates[$2] = 1
  }
  END {
    for (r in rates) {
      ratio = (kc[r] && sc[r] && ks[r] > 0) ? sprintf("%.2f", (ss[r] / sc[r]) / (ks[r] / kc[r])) : "-"
      printf "| %s | %s | %s | %s | %s | %s | %s (kam); %s (ser) |\n", r, k[r], s[r], ratio, kr[r], sr[r], kn[r], sn[r]
    }
  }' "$TABLE" | sort -t'|' -k2 -n
