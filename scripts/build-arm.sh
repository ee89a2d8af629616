#!/usr/bin/env bash
# Builds `ser` for small ARM boards from an x86-64 Debian/Ubuntu machine (README "Small ARM
# boards"):
#   scripts/build-arm.sh [--profile small|release] [--no-db|--smallest|--tiny] [aarch64] [armv7] [armv5te]
# With no target named, all three. Installs what is missing: Debian's cross gcc and libc
# packages (the linkers .cargo/config.toml names; gcc also compiles the bundled SQLite), qemu-user
# (for tests/arm.rs), and each target's std with rustup. Binaries: target/<triple>/<profile>/ser.
#
# --no-db builds without the database drivers (no SQLite, no MySQL, so no msilo either): a
# db_url is then refused at start with a clear error. --smallest also leaves out the regex
# crate's fast engines and the modules a small board seldom needs, dispatcher, rtpengine and
# the XMPP gateway (`--no-default-features`: script regexes still match the same, on the PikeVM alone; a script
# that loads a module left out is refused at its loadmodule line).
#
# --tiny is --smallest with std itself rebuilt for size (nightly `-Z build-std`, pinned as
# $TINY_TOOLCHAIN with rust-src): std's size-optimised code paths (`optimize_for_size`), no
# backtrace printer, no file:line:col strings in panics (`-Z location-detail=none`), derived
# Debug output reduced to type and variant names (`-Z fmt-debug=shallow`), and rust-lld with
# identical-code folding (`--icf=all`). panic stays `unwind` (the per-message isolation holds).
# Binaries: target/tiny/<triple>/small/ser.
#
# armv5te: Rust stopped shipping its prebuilt std with 1.94 (rustup answers 404; the channel
# manifest says `available = false`), so that target builds with the pinned toolchain
# $ARMV5TE_TOOLCHAIN (1.93.0, the last release that ships it; above the crate's rust-version).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=small
features=()
tiny=0
TINY_TOOLCHAIN="${TINY_TOOLCHAIN:-nightly-2026-05-20}"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --no-db) features=(--no-default-features --features fast-regex,dispatcher,rtpengine,xmpp); shift ;;
    --smallest) features=(--no-default-features); shift ;;
    --tiny) features=(--no-default-features); tiny=1; shift ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7 armv5te)
ARMV5TE_TOOLCHAIN="${ARMV5TE_TOOLCHAIN:-1.93.0}"

need=()
add_pkg() { dpkg -s "$1" >/dev/null 2>&1 || need+=("$1"); }
command -v qemu-arm >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64|aarch64-unknown-linux-gnu) add_pkg gcc-aarch64-linux-gnu; add_pkg libc6-dev-arm64-cross ;;
    armv7|armv7-unknown-linux-gnueabihf) add_pkg gcc-arm-linux-gnueabihf; add_pkg libc6-dev-armhf-cross ;;
    armv5te|armv5te-unknown-linux-gnueabi) add_pkg gcc-arm-linux-gnueabi; add_pkg libc6-dev-armel-cross ;;
    *) echo "unknown target '$t' (aarch64, armv7, armv5te)" >&2; exit 2 ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

for t in "${targets[@]}"; do
  toolchain=()
  case "$t" in
    aarch64*) triple=aarch64-unknown-linux-gnu ;;
    armv7*) triple=armv7-unknown-linux-gnueabihf ;;
    armv5te*)
      triple=armv5te-unknown-linux-gnueabi
      if [ "$tiny" = 0 ]; then
        rustup toolchain list | grep -q "^$ARMV5TE_TOOLCHAIN" ||
          rustup toolchain install "$ARMV5TE_TOOLCHAIN" --profile minimal
        toolchain=("+$ARMV5TE_TOOLCHAIN")
      fi
      ;;
  esac
  if [ "$tiny" = 1 ]; then
    # std comes from rust-src, built for this target: no prebuilt std needed (armv5te too).
    rustup toolchain list | grep -q "^$TINY_TOOLCHAIN" ||
      rustup toolchain install "$TINY_TOOLCHAIN" --profile minimal
    rustup component add --toolchain "$TINY_TOOLCHAIN" rust-src
    flags="-Zlocation-detail=none -Zfmt-debug=shallow -Zunstable-options -Clinker-features=+lld"
    flags="$flags -Clink-self-contained=+linker -Clink-arg=-Wl,--icf=all"
    # RUSTFLAGS replaces .cargo/config.toml's per-target rustflags: repeat them.
    case "$triple" in arm*) flags="$flags --cfg io_uring_skip_arch_check" ;; esac
    start=$(date +%s)
    RUSTFLAGS="$flags" CARGO_TARGET_DIR=target/tiny cargo "+$TINY_TOOLCHAIN" build \
      -Z build-std=std,panic_unwind -Z build-std-features=panic-unwind,optimize_for_size \
      --profile "$profile" -p ser --bin ser --target "$triple" ${features[@]+"${features[@]}"}
    bin="target/tiny/$triple/$profile/ser"
    echo "$triple: $bin $(stat -c %s "$bin") bytes, built in $(( $(date +%s) - start ))s"
    continue
  fi
  if [ ${#toolchain[@]} -gt 0 ]; then
    rustup target add --toolchain "$ARMV5TE_TOOLCHAIN" "$triple"
  else
    rustup target add "$triple"
  fi
  start=$(date +%s)
  cargo "${toolchain[@]}" build --profile "$profile" -p ser --bin ser --target "$triple" ${features[@]+"${features[@]}"}
  bin="target/$triple/$profile/ser"
  echo "$triple: $bin $(stat -c %s "$bin") bytes, built in $(( $(date +%s) - start ))s"
done
