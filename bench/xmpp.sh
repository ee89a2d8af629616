#!/usr/bin/env bash
# MESSAGE relay through the SIP-XMPP gateway (the jabber module): loadgen sends MESSAGEs to
# sip:juliet1*localhost@127.0.0.1 through ser, whose gateway writes each as a chat message to a
# private prosody (Debian's, on free loopback ports), where juliet1 (tests/data/xmpp/client.py,
# logged in) takes them. Reports the rate loadgen achieved (each MESSAGE answered 202 once its
# stanza was written to prosody), the messages juliet got, and the CPU per message of ser,
# prosody and the client (from /proc/PID/stat, 10 ms ticks: run 10 s or more).
#
#   bench/xmpp.sh [RATE] [SECONDS] [SHARDS]      e.g. bench/xmpp.sh 500 10 2
#
# Needs the release binaries (cargo build --release --bin ser --bin loadgen), prosody, python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/..
R=${1:-500}; D=${2:-10}; N=${3:-2}
BIN=${BIN:-$ROOT/target/release/ser}
LG=${LG:-$ROOT/target/release/loadgen}
W=$(mktemp -d /tmp/ser-bench-xmpp.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
C2S=$(free_port); COMP=$(free_port); SIP=$(free_port)
mkdir -p "$W/data/localhost/accounts"
printf 'return {\n\t["password"] = "pw";\n};\n' > "$W/data/localhost/accounts/juliet1.dat"
cat > "$W/prosody.cfg.lua" <<EOF
run_as_root = true
pidfile = "$W/prosody.pid"
data_path = "$W/data"
plugin_paths = {}
log = { warn = "$W/prosody.log" }
modules_enabled = { "roster", "saslauth", "disco", "ping", "posix" }
modules_disabled = { "s2s", "s2s_auth_certs" }
c2s_ports = { $C2S }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = {}
legacy_ssl_ports = {}
component_ports = { $COMP }
component_interfaces = { "127.0.0.1" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
VirtualHost "localhost"
Component "sipgw.localhost"
    component_secret = "s3cret"
EOF
prosody --config "$W/prosody.cfg.lua" -F > "$W/prosody.out" 2>&1 &
P=$!; pids+=("$P")
for port in $C2S $COMP; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

cat > "$W/ser.cfg" <<EOF
debug=2
loadmodule "modules/sl/sl.so"
loadmodule "modules/jabber/jabber.so"
modparam("jabber", "xmpp_port", $COMP)
modparam("jabber", "xmpp_domain", "sipgw.localhost")
modparam("jabber", "xmpp_secret", "s3cret")
modparam("jabber", "gateway_domain", "127.0.0.1")
modparam("jabber", "sip_domain", "127.0.0.1")
route {
    if (method=="MESSAGE" && uri=~"^sip:[^@]*[*]") {
        if (jab_send_message()) { sl_send_reply("202", "Accepted"); } else { sl_reply_error(); };
        break;
    };
    sl_send_reply("404", "Not Found");
}
EOF
"$BIN" -f "$W/ser.cfg" -l 127.0.0.1 -p "$SIP" -n "$N" -E -D > "$W/ser.log" 2>&1 &
S=$!; pids+=("$S")
mkfifo "$W/juliet.in"
python3 "$ROOT/tests/data/xmpp/client.py" 127.0.0.1 "$C2S" juliet1 localhost pw \
  < "$W/juliet.in" > "$W/juliet.out" 2> "$W/juliet.err" &
J=$!; pids+=("$J")
exec 4> "$W/juliet.in"   # keeps the client's stdin open
for _ in $(seq 100); do
  grep -q ready "$W/juliet.out" 2>/dev/null && grep -q "xmpp: connected" "$W/ser.log" && break
  sleep 0.1
done
grep -q "xmpp: connected" "$W/ser.log" || { echo "ser did not connect:"; cat "$W/ser.log"; exit 1; }

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
s0=$(cpu "$S"); p0=$(cpu "$P"); j0=$(cpu "$J")
# One user (loadgen's patterns number their users: juliet%d with one user is juliet1).
"$LG" message --target "127.0.0.1:$SIP" --callee-pattern 'juliet%d*localhost' --user-count 1 --rate "$R" \
  --duration "$D" --quiet --json "$W/lg.json" > "$W/lg.out" 2>&1 || true
sleep 1
s1=$(cpu "$S"); p1=$(cpu "$P"); j1=$(cpu "$J")
ok=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["succeeded"], "%.0f" % d["achieved_rate"], d["attempted"])' "$W/lg.json")
read -r succeeded achieved attempted <<< "$ok"
got=$(grep -c '"kind": "message"' "$W/juliet.out" || true)
hz=$(getconf CLK_TCK)
per() { echo $(( ($2 - $1) * 1000000 / hz / (succeeded > 0 ? succeeded : 1) )); }
echo "offered $R/s for ${D}s, shards $N: $succeeded of $attempted answered 202 ($achieved/s), juliet1 got $got"
echo "CPU per message: ser $(per "$s0" "$s1") us, prosody $(per "$p0" "$p1") us, client $(per "$j0" "$j1") us"
