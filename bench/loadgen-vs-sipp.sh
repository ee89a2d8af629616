#!/usr/bin/env bash
# loadgen against SIPp as call generators: both drive the same UAS (`sipp -sn uas`, or
# `loadgen uas` with UAS=loadgen) with the basic call (INVITE, 100/180/200, ACK, BYE, 200, no
# hold) at each rate, in turn (loadgen first in odd rounds, SIPp first in even ones), REPEAT
# times. Per run: the generator's CPU (user+sys of the process, from /usr/bin/time), calls
# done and failed, and whether it kept the rate (wall time within 20 % of the nominal).
# Prints one Markdown table: medians, and loadgen's CPU per call as a share of SIPp's (the
# median of the run-by-run ratios).
#
#   bench/loadgen-vs-sipp.sh ["1000 3000 6000"]       REPEAT=3 SECS=5 UAS=sipp|loadgen
#   LOADGEN_ARGS="--batch-us 2000" bench/loadgen-vs-sipp.sh "3000"
#   ONLY=loadgen bench/loadgen-vs-sipp.sh "60000 80000"      (SIPp's columns left empty)
#
# Needs sipp (Debian sip-tester) and a release build of loadgen (cargo build --release -p
# loadgen). Binds 127.0.0.1:5100 (UAS), :5101 (SIPp UAC) and an ephemeral port (loadgen).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-"1000 3000 6000"}
REPEAT=${REPEAT:-3}
SECS=${SECS:-5}
UAS=${UAS:-sipp}
LG=${LOADGEN:-target/release/loadgen}
[ -x "$LG" ] || { echo "build loadgen first: cargo build --release -p loadgen" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp is not installed (Debian: sip-tester)" >&2; exit 2; }
W=$(mktemp -d)
uas_pid=""
cleanup() { [ -n "$uas_pid" ] && kill "$uas_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

start_uas() {
    if [ "$UAS" = loadgen ]; then
        "$LG" uas --listen 127.0.0.1:5100 --quiet >"$W/uas.log" 2>&1 &
    else
        sipp -sn uas -i 127.0.0.1 -p 5100 -nostdin -buff_size 4194304 >"$W/uas.log" 2>&1 &
    fi
    uas_pid=$!
    sleep 1
}

# run_lg RATE N -> "cpu_s wall_s ok failed"
run_lg() {
    local r=$1 n=$2
    /usr/bin/time -o "$W/t" -f "%U %S %e" "$LG" call --target 127.0.0.1:5100 --rate "$r" \
        --count "$n" --timeout 5 --quiet --json "$W/lg.json" ${LOADGEN_ARGS:-} >/dev/null 2>&1 || true
    python3 - "$W/t" "$W/lg.json" <<'EOF'
import json, sys
u, s, e = open(sys.argv[1]).read().split()[-3:]
j = json.load(open(sys.argv[2]))
c = j.get("calls", j)
print(float(u) + float(s), e, c.get("succeeded", 0), c.get("failed", 0))
EOF
}

run_sipp() {
    local r=$1 n=$2
    if [ "${ONLY:-}" = loadgen ]; then
        echo "0 0 0 0"
        return
    fi
    rm -f "$W"/s*.csv
    /usr/bin/time -o "$W/t" -f "%U %S %e" timeout $((SECS * 10 + 60)) sipp -sn uac 127.0.0.1:5100 \
        -r "$r" -m "$n" -i 127.0.0.1 -p 5101 -timeout $((SECS * 10 + 30))s -nostdin \
        -buff_size 4194304 -trace_stat -stf "$W/s.csv" >/dev/null 2>&1 || true
    python3 - "$W/t" "$W/s.csv" <<'EOF'
import sys
u, s, e = open(sys.argv[1]).read().split()[-3:]
ok = failed = 0
try:
    rows = [l.rstrip("\n").split(";") for l in open(sys.argv[2]) if l.strip()]
    head, last = rows[0], rows[-1]
    ok = int(last[head.index("SuccessfulCall(C)")])
    failed = int(last[head.index("FailedCall(C)")])
except Exception:
    pass
print(float(u) + float(s), e, ok, failed)
EOF
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

start_uas
echo "UAS: $UAS; $SECS s of calls per run, $REPEAT runs each, medians; loadgen args: ${LOADGEN_ARGS:-defaults}"
echo
echo "| rate/s | loadgen CPU/call | loadgen failed | loadgen kept rate | SIPp CPU/call | SIPp failed | SIPp kept rate | loadgen/SIPp |"
echo "|---|---|---|---|---|---|---|---|"
for r in $RATES; do
    n=$((r * SECS))
    : >"$W/lg.txt"; : >"$W/sp.txt"
    for i in $(seq "$REPEAT"); do
        if [ $((i % 2)) -eq 1 ]; then
            run_lg "$r" "$n" >>"$W/lg.txt"; run_sipp "$r" "$n" >>"$W/sp.txt"
        else
            run_sipp "$r" "$n" >>"$W/sp.txt"; run_lg "$r" "$n" >>"$W/lg.txt"
        fi
    done
    row() { # file -> "us_per_call failed_total kept_runs/total"
        awk -v n="$n" -v secs="$SECS" '{printf "%.2f %d %d\n", $1 * 1e6 / n, $4, ($2 <= secs * 1.2) ? 1 : 0}' "$1" >"$1.r"
        local us fail kept
        us=$(cut -d' ' -f1 "$1.r" | median)
        fail=$(awk '{s += $2} END {print s}' "$1.r")
        kept=$(awk '{s += $3} END {print s "/" NR}' "$1.r")
        echo "$us $fail $kept"
    }
    read -r lus lfail lkept < <(row "$W/lg.txt")
    read -r sus sfail skept < <(row "$W/sp.txt")
    # The ratio run by run (each loadgen run against the SIPp run beside it), then the median:
    # the machine's speed drifts less within a pair than across the whole series.
    ratio=$(paste -d' ' "$W/lg.txt" "$W/sp.txt" |
        awk '{printf "%.4f\n", ($5 > 0) ? $1 / $5 : 0}' | median)
    ratio=$(awk -v x="$ratio" 'BEGIN {printf "%.2f", x}')
    echo "| $r | $lus us | $lfail / $((n * REPEAT)) | $lkept | $sus us | $sfail / $((n * REPEAT)) | $skept | $ratio |"
done
