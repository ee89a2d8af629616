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
# Ratio table. Repetition i of ser is paired with repetition i of Kamailio at the same rate (they ran
# back to back). us/call = proxy utime+stime / successful calls (column 21 of run.sh's CSV). A step
# that FAILed run.sh's rule is shown with a "*" and left out of the means and of the ratio of means
# (its CPU includes retransmissions and aborted calls, so it is not comparable); "-" = no step / no
# successful call.
K=$RESDIR/$ROLE-kamailio-c$KAM_CHILDREN-$stamp.csv
S=$RESDIR/$ROLE-ser-n$SER_SHARDS-$stamp.csv
echo "kamailio: $K"
echo "ser:      $S"
echo
echo "| rate | kamailio us/call (runs) | ser us/call (runs) | ratio ser/kam (runs) | kamailio mean (PASS) | ser mean (PASS) | ratio of means | kamailio failed / pass | ser failed / pass |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F, '
  FNR == 1 { file++; next }
  { r = $4; if (file == 1) { n = ++kn[r]; ku[r, n] = $21; kok[r, n] = $9; kps[r, n] = $22; kf[r] = kf[r] (n > 1 ? "/" : "") $10; kp[r] = kp[r] (n > 1 ? "/" : "") $22 }
            else           { n = ++sn[r]; su[r, n] = $21; sok[r, n] = $9; sps[r, n] = $22; sf[r] = sf[r] (n > 1 ? "/" : "") $10; sp[r] = sp[r] (n > 1 ? "/" : "") $22 }
    rates[r] = 1 }
  END {
    for (r in rates) {
      m = (kn[r] > sn[r]) ? kn[r] : sn[r]; kl = sl = rl = ""; ks = kc = ss = sc = 0
      for (i = 1; i <= m; i++) {
        kv = ((r, i) in ku && kok[r, i] > 0) ? ku[r, i] + 0 : -1
        sv = ((r, i) in su && sok[r, i] > 0) ? su[r, i] + 0 : -1
        kx = (kv >= 0 && kps[r, i] != "PASS") ? "*" : ""; sx = (sv >= 0 && sps[r, i] != "PASS") ? "*" : ""
        kl = kl (i > 1 ? " / " : "") (kv >= 0 ? sprintf("%.0f", kv) kx : "-")
        sl = sl (i > 1 ? " / " : "") (sv >= 0 ? sprintf("%.0f", sv) sx : "-")
        rl = rl (i > 1 ? " / " : "") ((kv > 0 && sv >= 0) ? sprintf("%.2f", sv / kv) (kx sx != "" ? "*" : "") : "-")
        if (kv >= 0 && kx == "") { ks += kv; kc++ }
        if (sv >= 0 && sx == "") { ss += sv; sc++ }
      }
      km = kc ? ks / kc : -1; sm = sc ? ss / sc : -1
      printf "| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |\n", r, kl, sl, rl,
        (km >= 0 ? sprintf("%.0f", km) : "-"), (sm >= 0 ? sprintf("%.0f", sm) : "-"),
        ((km > 0 && sm >= 0) ? sprintf("%.2f", sm / km) : "-"),
        (kf[r] == "" ? "-" : kf[r]), (kp[r] == "" ? "-" : kp[r]), (sf[r] == "" ? "-" : sf[r]), (sp[r] == "" ? "-" : sp[r])
    }
  }' "$K" "$S" | sort -t'|' -k2 -n
