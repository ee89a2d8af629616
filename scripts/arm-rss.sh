#!/usr/bin/env bash
# Idle resident memory of `ser` (README "Small ARM boards"): each ARM build started under
# qemu-user with the test script of tests/arm.rs (sl tm maxfwd textops usrloc registrar, 1 shard),
# and the host build natively for comparison. Under qemu-user the guest IS the qemu process, so
# its VmRSS includes qemu itself (its code, the translated-code cache, the guest's mappings);
# the host figure is what the same server needs natively.
#   scripts/arm-rss.sh [profile]   (default small; the host build is target/release/ser)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-small}"
dir=$(mktemp -d)
cat > "$dir/idle.cfg" <<'CFG'
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
route {
    if (method=="REGISTER") { save("location"); break; };
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    t_relay();
}
CFG
port=35070
rss() { # command...; prints the VmRSS of the started process after 3 s idle
  "$@" -f "$dir/idle.cfg" -l 127.0.0.1 -p $port -n 1 -E -D 2>"$dir/log" &
  local pid=$!
  sleep 3
  grep VmRSS "/proc/$pid/status" | awk '{print $2" kB"}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
  port=$((port + 1))
}
for spec in "aarch64-unknown-linux-gnu qemu-aarch64 /usr/aarch64-linux-gnu" \
            "armv7-unknown-linux-gnueabihf qemu-arm /usr/arm-linux-gnueabihf" \
            "armv5te-unknown-linux-gnueabi qemu-arm /usr/arm-linux-gnueabi"; do
  set -- $spec
  bin="target/$1/$profile/ser"
  [ -x "$bin" ] || { echo "$1: no $bin"; continue; }
  echo "$1 (under $2): $(rss "$2" -L "$3" "$bin")"
done
[ -x target/release/ser ] && echo "x86_64 host, native: $(rss target/release/ser)"
rm -rf "$dir"
