#!/usr/bin/env bash
# msilo (issue 20): MESSAGEs to users who are not registered, each stored by m_store before
# the 202, ser against Kamailio's msilo (db_sqlite, Debian's kamailio-sqlite-modules) in the
# same run; then the users register and m_dump delivers what was stored. SIPp on UDP,
# 127.0.0.1; each server in a network namespace of its own, a fresh SQLite file per run in
# /dev/shm (so the figure is the servers' CPU, not the disk's fsyncs).
#
#   bench/msilo.sh [RATES]            default "200 500 1000"
#   SER_SHARDS=2 KAM_CHILDREN=4 DUR=10 REPEAT=1 SER_BIN=target/release/ser PROXIES="kamailio ser"
#
# Per run: CPU (utime+stime from /proc, all threads or processes) per 202 received, the rows in
# the silo table after the run (must equal the 202s), SIPp's achieved rate; then 100 users
# register (one REGISTER each, a SIPp UAS answering the MESSAGEs m_dump sends): messages
# delivered and deleted within 10 s. Results: bench/results/msilo-<stamp>.csv and a table.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SER_SHARDS=${SER_SHARDS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-4}
DUR=${DUR:-10}
SER_BIN_GIVEN=${SER_BIN:-}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
W=${WORK:-/tmp/ser-bench}/msilo
mkdir -p "$W"

if [ "${1:-}" = --inside ]; then
  P=$2 R=$3 OUT=$4
  ip link set lo up
  DB=/dev/shm/ser-bench-msilo-$P-$$.sqlite
  rm -f "$DB"*
  if [ "$P" = ser ]; then
    sed "s#MSILO_DB#$DB#" "$HERE/cfg/msilo.cfg" >"$W/ser.cfg"
    timeout -k 5 600 "$SER_BIN" -f "$W/ser.cfg" -n "$SER_SHARDS" -E -D >"$W/ser.log" 2>&1 &
  else
    sqlite3 "$DB" 'PRAGMA journal_mode=WAL;' >/dev/null
    sqlite3 "$DB" </usr/share/kamailio/db_sqlite/standard-create.sql
    sqlite3 "$DB" </usr/share/kamailio/db_sqlite/msilo-create.sql
    rm -f "$W/kam.pid"
    timeout -k 5 600 kamailio -f "$HERE/kamailio/msilo.cfg" -A "CHILDREN=$KAM_CHILDREN" -A "MSILO_DB=\"sqlite:///$DB\"" \
      -DD -E -m 256 -M 16 -w "$W" -Y "$W" -P "$W/kam.pid" >"$W/kam.log" 2>&1 &
  fi
  S=$!
  sleep 2
  tree() { echo "$1"; pgrep -P "$1" | while read -r c; do tree "$c"; done; }
  ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
  sp=$(tree "$S"); p0=$(ticks $sp)
  C=$((R * DUR))
  t0=$(date +%s.%N)
  sipp -sf "$HERE/sipp/uac-message-offline.xml" 127.0.0.1:5064 -inf "$HERE/sipp/users.csv" -i 127.0.0.1 -p 5090 \
    -r "$R" -m "$C" -nostdin -timeout $((DUR + 30)) -timeout_error -buff_size 4194304 \
    -trace_stat -stf "$W/uac-$P.csv" -fd 1 >/dev/null 2>&1
  rc=$?
  t1=$(date +%s.%N)
  p1=$(ticks $sp)
  ok=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "SuccessfulCall(C)") c = i; next } { v = $c } END { print v + 0 }' "$W/uac-$P.csv")
  rows=$(sqlite3 "$DB" 'select count(*) from silo;' 2>/dev/null || echo '?')
  # Delivery: 100 users register from a SIPp UAS that answers every MESSAGE 200.
  rm -f "$W/uas-$P.csv"
  sipp -sf "$HERE/sipp/uas-message.xml" -i 127.0.0.1 -p 5070 -nostdin -buff_size 4194304 \
    -trace_stat -stf "$W/uas-$P.csv" -fd 1 >/dev/null 2>&1 &
  U=$!
  sleep 0.5
  d0=$(ticks $sp)
  python3 - <<PY
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(2)
port = s.getsockname()[1]
for n in range(1, 101):
    m = (f"REGISTER sip:127.0.0.1:5064 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-r{n}\r\n"
         f"From: <sip:u{n}@127.0.0.1:5064>;tag=r{n}\r\nTo: <sip:u{n}@127.0.0.1:5064>\r\nCall-ID: reg-{n}@bench\r\n"
         f"CSeq: 1 REGISTER\r\nContact: <sip:u{n}@127.0.0.1:5070>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    s.sendto(m.encode(), ("127.0.0.1", 5064))
    try:
        s.recv(4096)
    except socket.timeout:
        pass
PY
  # Each of u1..u100 has every 1000th message (SIPp takes users.csv's 1000 users in turn);
  # delivered = what the phone answered (Kamailio deletes delivered rows only on its
  # check_time timer, so the table does not tell).
  todo=$(( (C / 1000) * 100 + (C % 1000 < 100 ? C % 1000 : 100) ))
  got=0
  for _ in $(seq 1 20); do
    sleep 0.5
    got=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "SuccessfulCall(C)") c = i; next } { v = $c } END { print v + 0 }' "$W/uas-$P.csv" 2>/dev/null || echo 0)
    [ "$got" -ge "$todo" ] && break
  done
  left=$((todo - got))
  d1=$(ticks $sp)
  kill "$S" "$U" 2>/dev/null; wait 2>/dev/null
  rm -f "$DB"*
  hz=$(getconf CLK_TCK)
  awk -v p="$P" -v r="$R" -v c="$C" -v ok="$ok" -v rc="$rc" -v pt=$((p1 - p0)) -v dt=$((d1 - d0)) -v hz="$hz" \
    -v rows="$rows" -v secs="$(echo "$t1 - $t0" | bc)" -v left="$left" -v s100="$todo" \
    'BEGIN { d = ok > 0 ? ok : 1; printf "%s,%d,%d,%d,%d,%.1f,%s,%.1f,%d,%s,%.1f\n", p, r, c, ok, rc, pt * 1e6 / hz / d, rows, ok / secs, s100, left, (s100 > 0 ? dt * 1e6 / hz / s100 : 0) }' >>"$OUT"
  exit 0
fi

RATES=${1:-"200 500 1000"}
REPEAT=${REPEAT:-1}
[ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so ] || echo "no db_sqlite for Kamailio (apt-get install kamailio-sqlite-modules): its runs will fail" >&2
if [ -z "$SER_BIN_GIVEN" ]; then
  (cd "$ROOT" && cargo build --release --quiet --bin ser) || exit 2
fi
mkdir -p "$HERE/results"
OUT=$HERE/results/msilo-$(date +%Y%m%d-%H%M%S).csv
echo "proxy,rate,sent,accepted_202,sipp_rc,us_per_stored_message,silo_rows,achieved_per_s,to_deliver,not_delivered_in_10s,us_per_delivered_message" >"$OUT"
for ((i = 1; i <= REPEAT; i++)); do
  for R in $RATES; do
    for P in ${PROXIES:-kamailio ser}; do
      SER_SHARDS=$SER_SHARDS KAM_CHILDREN=$KAM_CHILDREN DUR=$DUR SER_BIN=$SER_BIN WORK=${WORK:-/tmp/ser-bench} \
        unshare -n "$0" --inside "$P" "$R" "$OUT"
    done
  done
done
echo "$OUT"
column -s, -t "$OUT"
