#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need (sipp from
# sip-tester, sipsak, baresip for the SIP-client tests over TCP and TLS, iproute2 for the
# loopback-only network namespace, dnsmasq as the DNS server of the RFC 3263 tests,
# mariadb-server for the MariaDB tests, rtpengine-daemon for the media relay tests, openssl for
# the TLS tests' certificates and python3, whose ssl module is their TLS peer), then every test
# of the workspace: unit tests, the RFC 4475/5118 corpora, the script and VM tests, the shard
# runtime on both I/O backends, the
# integration tests that drive a real `ser` with sipp, sipsak, baresip and headless chromium
# (JsSIP and SIP.js pages over WebSocket; chromium and Node.js installed here), and `ser`
# cross-built for aarch64 and armv5te running under qemu-user (tests/arm.rs), then the same
# for the tiny builds (scripts/build-arm.sh --tiny, a pinned nightly fetched by rustup).
set -euo pipefail
cd "$(dirname "$0")/.."

# What it is doing, as it goes: the first build alone is minutes of silence otherwise.
t0=$(date +%s)
step() { echo "==> [$(( $(date +%s) - t0 ))s] $*"; }

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
# tests/scanners.rs: sipvicious' svmap, svwar and svcrack against dist/ser.cfg.
command -v svwar >/dev/null 2>&1 || need+=(sipvicious)
# baresip for tests/baresip.rs: baresip-core alone has the binary and the modules it uses
# (account, menu, ctrl_tcp, g711); the package baresip only adds GUI and video recommends.
# tests/tls.rs: the openssl command line makes a test CA and certificates; Python's ssl module
# is the TLS client and server (sipsak fails over TLS).
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# tests/xmpp.rs: prosody, the XMPP server the jabber gateway connects to as a component (each
# test starts its own on free loopback ports; the packaged service is stopped below).
command -v prosody >/dev/null 2>&1 || need+=(prosody)
# MariaDB for the database tests: each test binary starts its own private mariadbd on
# loopback (tests/common/mariadb.rs); the packaged service is never started.
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
# tests/rtpengine.rs: the media relay (userspace forwarding; each test starts its own daemon on
# loopback, and the packaged service is stopped and disabled below when apt started it).
command -v rtpengine >/dev/null 2>&1 || need+=(rtpengine-daemon)
# tests/browser.rs: Debian's chromium (headless, driven by playwright-core from Node.js; no
# browser is downloaded), and Node.js with npm for the driver and its npm packages.
[ -x /usr/bin/chromium ] || need+=(chromium)
if ! command -v node >/dev/null 2>&1; then
  need+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
  need+=(npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  step "installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" rtpengine-daemon "* ]]; then
    if command -v systemctl >/dev/null 2>&1; then
      $SUDO systemctl disable --now rtpengine-daemon >/dev/null 2>&1 || true
    fi
    if [ -x /etc/init.d/rtpengine-daemon ]; then
      $SUDO /etc/init.d/rtpengine-daemon stop >/dev/null 2>&1 || true
    fi
  fi
else
  step "Debian packages for the tests: all present"
fi
# apt starts prosody's packaged service where an init system runs; the tests need none of it.
if [[ " ${need[*]-} " == *" prosody "* ]]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prosody >/dev/null 2>&1 || true
  else
    $SUDO service prosody stop >/dev/null 2>&1 || true
  fi
fi

# The browser test's npm packages (tests/browser/package-lock.json: playwright-core, JsSIP,
# SIP.js, esbuild), and that test may not skip for want of them, chromium or node.
step "npm ci in tests/browser (playwright-core, jssip, sip.js, esbuild)"
(cd tests/browser && { npm ci --no-audit --no-fund --loglevel=error || npm ci --no-audit --no-fund --loglevel=error; })
export SER_BROWSER_REQUIRE=1

# The integration tests start real processes; build the binaries once, then test.
step "building the workspace's binaries (ser, serctl, serweb, loadgen, bench; a few minutes from cold)"
cargo build --workspace --bins --quiet
# tests/arm.rs runs the ARM builds under qemu-user; CI requires aarch64 and armv5te (the 64-bit
# boards and the smallest, no 64-bit atomics). Each cross build takes about 1.5 minutes from cold
# on 2 cores (README "Small ARM boards"); scripts/build-arm.sh installs the cross gcc, qemu-user
# and the targets' std when missing.
# A target whose toolchain cannot be fetched here (armv5te needs a pinned older toolchain) is
# reported loudly and left out, rather than stopping every other test.
required=()
for t in aarch64 armv5te; do
  step "cross-building ser for $t (installs the cross gcc and qemu-user when missing; armv5te fetches Rust 1.93.0)"
  if scripts/build-arm.sh "$t"; then
    required+=("$t")
  else
    echo "WARNING: the $t cross build failed; tests/arm.rs will not require it" >&2
  fi
done
SER_ARM_REQUIRE="$(IFS=,; echo "${required[*]}")"
export SER_ARM_REQUIRE
step "building and running every test of the workspace (about 4 minutes on 2 cores once built)"
cargo test --workspace --quiet --no-fail-fast -- --test-threads=2
# The tiny ARM builds (README "Small ARM boards": --smallest with std rebuilt for size on a
# pinned nightly, under the 1.5 MB goal) must pass the same qemu test. A toolchain that cannot
# be fetched here is reported loudly and the tiny test left out; a size over the goal is
# reported, not failed (it is a goal).
tiny=()
for t in aarch64 armv5te; do
  step "tiny build for $t (std rebuilt for size on a pinned nightly, fetched on first use)"
  if scripts/build-arm.sh --tiny "$t"; then
    tiny+=("$t")
  else
    echo "WARNING: the tiny $t build failed; tests/arm.rs will not run it" >&2
  fi
done
if [ ${#tiny[@]} -gt 0 ]; then
  for f in target/tiny/*/small/ser; do
    size=$(stat -c %s "$f")
    echo "tiny build: $f $size bytes"
    [ "$size" -le 1500000 ] || echo "WARNING: $f is over the 1.5 MB goal" >&2
  done
  step "running tests/arm.rs on the tiny builds under qemu-user"
  SER_ARM_TARGET_DIR=target/tiny SER_ARM_REQUIRE="$(IFS=,; echo "${tiny[*]}")" \
    cargo test --quiet --test arm
fi
step "done"
