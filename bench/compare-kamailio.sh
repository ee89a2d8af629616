#!/usr/bin/env bash
# Side-by-side CPU per call: ser and Kamailio under the same SIPp load, in one run, with the
# project's shared anchor harness (../shared/kamailio-anchors/run.sh: SIPp UAC -> proxy -> SIPp
# UAS on 127.0.0.1, proxy CPU = utime+stime from /proc over the UAC run, divided by calls).
#
#   bench/compare-kamailio.sh [ROLE] [RATES]      ROLE a (stateless, default) | b (needs tm)
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 REPEAT=1
#
# Needs: kamailio, sip-tester (sipp), sysstat (pidstat); builds ser in release mode.
# Results: bench/results/<role>-<tag>.csv and a ratio table on stdout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
ROLE=${1:-a}
RATES=${2:-"1000 2000"}
SER_SHARDS=${SER_SHARDS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-4}
REPEAT=${REPEAT:-1}
export DUR=${DUR:-10}
export RESDIR=$HERE/results
export WORK=${WORK:-/tmp/ser-bench}
mkdir -p "$RESDIR"

(cd "$ROOT" && cargo build --release --quiet --bin ser)
SER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ser
case $ROLE in
  a) CFG=a-stateless.cfg ;;
  b) CFG=b-stateful.cfg ;;
  *) echo "role $ROLE: only a and b are scripted here" >&2; exit 2 ;;
esac
stamp=$(date +%Y%m%d-%H%M%S)
for ((i = 1; i <= REPEAT; i++)); do
  for R in $RATES; do
    # Alternate the two proxies rate by rate so both see the same machine noise.
    CHILDREN=$KAM_CHILDREN TAG=kamailio-c$KAM_CHILDREN-$stamp RATES="$R" "$ANCHORS/run.sh" "$ROLE" | grep -v '^#' || true
    PROXY_START="$SER_BIN -f $ANCHORS/cfg-ser/$CFG -n $SER_SHARDS -E -D" \
      CHILDREN=$SER_SHARDS TAG=ser-n$SER_SHARDS-$stamp RATES="$R" "$ANCHORS/run.sh" "$ROLE" | grep -v '^#' || true
  done
done
echo
echo "| rate | kamailio us/call | ser us/call | ratio ser/kamailio | ser failed | ser pass |"
echo "|---|---|---|---|---|---|"
K=$RESDIR/$ROLE-kamailio-c$KAM_CHILDREN-$stamp.csv
S=$RESDIR/$ROLE-ser-n$SER_SHARDS-$stamp.csv
awk -F, 'NR==FNR { if (FNR>1) { k[$4]+=$21; kn[$4]++ } next }
         FNR>1 { s[$4]+=$21; sn[$4]++; f[$4]+=$10; p[$4]=p[$4] $22 " " }
         END { for (r in s) if (kn[r]) printf "| %s | %.0f | %.0f | %.2f | %d | %s|\n", r, k[r]/kn[r], s[r]/sn[r], (s[r]/sn[r])/(k[r]/kn[r]), f[r], p[r] }' "$K" "$S" | sort -t'|' -k2 -n
