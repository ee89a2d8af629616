#!/usr/bin/env bash
# Where a call's cost goes at a moderate rate: per call, the proxy's CPU (user, system),
# voluntary and involuntary context switches (all its threads or processes), and for ser, per
# shard, wake-ups (event loop iterations), system calls, datagrams in and out and hand-offs
# between shards (its /metrics, ser_shard_*). The anchors' call scenario (SIPp UAC -> proxy ->
# SIPp UAS on 127.0.0.1, ../shared/kamailio-anchors), ser and Kamailio one after the other,
# each in a network namespace of its own.
#
#   bench/wakeups.sh [ROLE] [RATES]       ROLE a (stateless, default) | b (stateful)
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 SER_BIN=target/release/ser
#   GEN=sipp|loadgen|both   the caller (default sipp): loadgen runs the same uac-call.xml with
#                           its default pacing (each message when it is due); both: ser only,
#                           driven by SIPp then by loadgen, to compare what the server sees
#   PROXIES="kamailio ser"  which proxies
#   SIPP_ARGS=, LOADGEN_ARGS=  more options for the caller (e.g. SIPP_ARGS="-timer_resol 1": SIPp
#                           schedules to the millisecond, as loadgen's default, instead of its
#                           default 10 ms timer, which sends in bursts)
#
# Prints one block per proxy and rate; bench/RESULTS.md quotes them.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
A=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
if [ "${1:-}" = --inside ]; then
  ROLE=$WAKEUPS_ROLE
else
  ROLE=${1:-a}
  RATES=${2:-"1000 3000"}
fi
SER_SHARDS=${SER_SHARDS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-4}
DUR=${DUR:-10}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
LG_BIN=${LG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/loadgen}
GEN=${GEN:-sipp}
W=${WORK:-/tmp/ser-bench}/wakeups
mkdir -p "$W"
case $ROLE in
  a) CFG=a-stateless.cfg; PORT=5061 ;;
  b) CFG=b-stateful.cfg; PORT=5062 ;;
  *) echo "ROLE a or b" >&2; exit 2 ;;
esac
[ -x "$SER_BIN" ] || { echo "no ser at $SER_BIN (cargo build --release --bin ser)" >&2; exit 2; }

if [ "${1:-}" = --inside ]; then
  shift
  P=$1 R=$2 G=$3
  ip link set lo up
  rm -f "$W"/*.log "$W"/m0 "$W"/m1 "$W"/s0 "$W"/s1 "$W/kam.pid"
  sipp -sf "$A/scen/uas-call.xml" -i 127.0.0.1 -p 5070 -nostdin -buff_size 4194304 >/dev/null 2>&1 &
  U=$!
  if [ "$P" = ser ]; then
    { echo 'metrics_listen="127.0.0.1:19090"'; sed "s/^children=.*/children=$SER_SHARDS/" "$A/cfg-ser/$CFG"; } >"$W/ser.cfg"
    "$SER_BIN" -f "$W/ser.cfg" -n "$SER_SHARDS" -E -D >"$W/ser.log" 2>&1 &
  else
    kamailio -f "$A/cfg/$CFG" -A "CHILDREN=$KAM_CHILDREN" -A "DBURL=\"text://$A/cfg/dbtext\"" \
      -DD -E -m 1024 -M 16 -w "$W" -Y "$W" -P "$W/kam.pid" >"$W/kam.log" 2>&1 &
  fi
  S=$!
  sleep 1.5
  pids() { echo "$S"; pgrep -P "$S"; }
  snap() { # per thread of every process: name voluntary nonvoluntary; then "cpu" utime stime
    # of the processes (the per-thread split of user and system time is not kept here)
    local p t
    for p in $(pids); do
      for t in /proc/"$p"/task/*; do
        echo "$(tr ' ' _ <"$t/comm") $(awk '/^voluntary/ {v=$2} /^nonvoluntary/ {n=$2} END {print v+0, n+0}' "$t/status")"
      done
    done 2>/dev/null | sort
    for p in $(pids); do awk '{print "=cpu", $14, $15}' /proc/"$p"/stat; done 2>/dev/null
  }
  metrics() { curl -s --max-time 2 http://127.0.0.1:19090/metrics | grep '^ser_shard_' ; }
  snap >"$W/s0"
  [ "$P" = ser ] && metrics >"$W/m0"
  C=$((R * DUR))
  if [ "$G" = loadgen ]; then
    "$LG_BIN" -sf "$A/scen/uac-call.xml" --target "127.0.0.1:$PORT" --listen 127.0.0.1:5090 -s test \
      --rate "$R" --count "$C" \
      --quiet --json "$W/lg.json" ${LOADGEN_ARGS:-} >/dev/null 2>&1
  else
    sipp -sf "$A/scen/uac-call.xml" "127.0.0.1:$PORT" -s test -i 127.0.0.1 -p 5090 -r "$R" -m "$C" \
      -nostdin -timeout 60 -timeout_error -buff_size 4194304 ${SIPP_ARGS:-} >/dev/null 2>&1
  fi
  rc=$?
  snap >"$W/s1"
  [ "$P" = ser ] && metrics >"$W/m1"
  kill "$S" "$U" 2>/dev/null; wait 2>/dev/null
  hz=$(getconf CLK_TCK)
  echo "== $P role $ROLE rate $R/s, $C calls by $G (rc $rc)"
  # Threads of the same name summed (Kamailio's processes are all "kamailio").
  sum() { awk '$1 != "=cpu" {v[$1]+=$2; i[$1]+=$3} END {for (k in v) print k, v[k], i[k]}' "$1" | sort; }
  join -a1 <(sum "$W/s0") <(sum "$W/s1") |
    awk -v C="$C" '{ dv=$4-$2; di=$5-$3; if (dv+di == 0) next; tv+=dv; ti+=di;
      printf "  %-18s cs/call %.2f voluntary + %.3f involuntary\n", $1, dv/C, di/C }
      END { printf "  %-18s cs/call %.2f voluntary + %.3f involuntary\n", "all", tv/C, ti/C }'
  cpu() { awk '$1 == "=cpu" {u+=$2; s+=$3} END {print u+0, s+0}' "$1"; }
  read -r u0 s0 < <(cpu "$W/s0")
  read -r u1 s1 < <(cpu "$W/s1")
  awk -v C="$C" -v hz="$hz" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) \
    'BEGIN { printf "  cpu %.0f user + %.0f system = %.0f us/call\n", du*1e6/hz/C, ds*1e6/hz/C, (du+ds)*1e6/hz/C }'
  if [ "$P" = ser ]; then
    # ser_shard_<what>_total{shard="i"} n: the difference, per call, by shard.
    join <(sed 's/ /|/' "$W/m0" | sort) <(sed 's/ /|/' "$W/m1" | sort) -t'|' 2>/dev/null |
      awk -F'|' -v C="$C" '{ split($1, a, "{shard=\""); what=a[1]; sub(/^ser_shard_/, "", what); sub(/_total$/, "", what);
          sh=a[2]; sub(/".*/, "", sh); d[what, sh]=($3-$2)/C; w[what]=1; s[sh]=1 }
        END { for (sh in s) { line="  shard " sh ":"; for (k in w) line=line sprintf(" %s %.2f", k, d[k, sh]); print line " (per call)" } }' | sort
  fi
  exit 0
fi

if [ "$GEN" = both ]; then
  runs="ser:sipp ser:loadgen"
else
  runs=""
  for P in ${PROXIES:-kamailio ser}; do runs="$runs $P:$GEN"; done
fi
for R in $RATES; do
  for pg in $runs; do
    WAKEUPS_ROLE=$ROLE ANCHORS=$A SER_SHARDS=$SER_SHARDS KAM_CHILDREN=$KAM_CHILDREN DUR=$DUR \
      LOADGEN_ARGS="${LOADGEN_ARGS:-}" SER_BIN=$SER_BIN LG_BIN=$LG_BIN WORK=${WORK:-/tmp/ser-bench} \
      unshare -n "$0" --inside "${pg%%:*}" "$R" "${pg##*:}"
  done
done
