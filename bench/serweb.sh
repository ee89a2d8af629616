#!/usr/bin/env bash
# serweb (issue 21): page load times of the call history and the dashboard with 100 000 acc
# rows, and serweb's memory. A fresh SQLite database (ser's schema, `serctl db init`) with 10
# users, one of them an admin, and ROWS acc rows over 30 days, half of them to user1; serweb
# (release build) on 127.0.0.1; each page loaded LOADS times with curl after logging in
# (the first load is printed apart: it warms SQLite's cache).
#
#   bench/serweb.sh            ROWS=100000 LOADS=5
#
# Prints one line per page: first load, then min / median / max of the others (ms); then
# serweb's VmRSS and VmHWM.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=${ROWS:-100000}
LOADS=${LOADS:-5}
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
(cd "$ROOT" && cargo build --release --quiet --bin serweb --bin serctl)
W=$(mktemp -d /tmp/ser-bench-serweb.XXXXXX)
trap 'kill "$P" 2>/dev/null; wait "$P" 2>/dev/null; rm -rf "$W"' EXIT
export DB_URL="sqlite://$W/ser.db" SIP_DOMAIN=bench.test
"$T/serctl" db init >/dev/null
for i in $(seq 1 10); do
  printf 'pw%s\npw%s\n' "$i" "$i" | "$T/serctl" add "user$i" "pw$i" "user$i@bench.test" >/dev/null
done
"$T/serctl" acl grant user1 admin >/dev/null
python3 - "$W/ser.db" "$ROWS" <<'PY'
import sqlite3, sys, random, datetime
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
random.seed(1)
now = datetime.datetime(2026, 12, 7, 12, 0, 0)
rows = []
for i in range(n):
    u = 1 if i % 2 == 0 else random.randint(2, 10)
    peer = random.randint(1, 10)
    t = now - datetime.timedelta(seconds=random.randint(0, 30 * 86400))
    st = random.choice(["200 OK", "200 OK", "486 Busy Here", "408 Request Timeout", "487 Request Terminated"])
    rows.append((f"<sip:user{peer}@bench.test>;tag={i}", f"<sip:user{u}@bench.test>", st, "INVITE",
                 f"sip:user{u}@bench.test", f"sip:user{u}@127.0.0.1:5070", f"call-{i}@bench",
                 f"user{peer}", f"f{i}", f"t{i}", t.strftime("%Y-%m-%d %H:%M:%S")))
c.executemany("INSERT INTO acc (sip_from, sip_to, sip_status, sip_method, i_uri, o_uri, sip_callid,"
              " username, fromtag, totag, time) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
c.executemany("INSERT INTO missed_calls (sip_from, sip_to, sip_status, sip_method, i_uri, o_uri,"
              " sip_callid, username, fromtag, totag, time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
              [r for r in rows if not r[2].startswith("200")])
c.commit()
PY
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$T/serweb" -l "127.0.0.1:$PORT" >"$W/serweb.log" 2>&1 &
P=$!
B=http://127.0.0.1:$PORT
for _ in $(seq 1 50); do curl -s -o /dev/null "$B/login" && break; sleep 0.1; done
J=$W/cookies
csrf=$(curl -s -c "$J" -b "$J" "$B/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
curl -s -o /dev/null -c "$J" -b "$J" --data-urlencode "csrf=$csrf" --data-urlencode user=user1 \
  --data-urlencode domain=bench.test --data-urlencode password=pw1 "$B/login"
echo "serweb at $(cd "$ROOT" && git rev-parse --short HEAD), $ROWS acc rows, $LOADS loads a page"
for page in /calls "/calls?page=101" "/calls?peer=user3" "/calls?from=2026-12-04&to=2026-12-07" /admin/dashboard /admin/users /phones; do
  ts=()
  for i in $(seq 0 "$LOADS"); do
    out=$(curl -s -o "$W/page" -w '%{http_code} %{time_total}' -b "$J" "$B$page")
    ts+=("${out#* }")
    code=${out%% *}
  done
  rows=$(grep -c "<tr" "$W/page" || true)
  printf "%-40s %3s rows, " "$page" "$rows"
  printf 'HTTP %s, %6d bytes, first %.1f ms, then ' "$code" "$(wc -c <"$W/page")" "$(echo "${ts[0]} * 1000" | bc)"
  printf '%s\n' "${ts[@]:1}" | sort -n | awk '{v[NR] = $1 * 1000} END {printf "%.1f / %.1f / %.1f ms\n", v[1], v[int((NR + 1) / 2)], v[NR]}'
done
grep -E 'VmRSS|VmHWM' "/proc/$P/status" | tr -s ' \t' ' '
