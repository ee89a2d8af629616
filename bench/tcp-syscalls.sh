#!/usr/bin/env bash
# Where ser's time per call goes over TCP: context switches per call (from
# /proc/PID/task/*/status) and, with `strace`, system calls per call (strace -f -c; CPU figures
# of that run are not valid). ser stateful (bench/cfg/stateful-tcp.cfg), SIPp caller over TCP
# (or UDP: mode u1), SIPp callee over UDP, RATE calls/s for 5 s, in a network namespace of its own.
#
#   unshare -n bench/tcp-syscalls.sh SHARDS MODE RATE [strace]     e.g. 2 t1 200 strace
#
# Prints one summary line (and strace's table). SER_BIN=target/release/ser
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/kamailio-anchors}
SER_BIN=${SER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ser}
N=${1:?shards} M=${2:?mode} R=${3:?rate} S=${4:-}
W=${WORK:-/tmp/ser-bench}/syscalls
mkdir -p "$W"; rm -f "$W"/*
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="20000 65000"
if [ "$S" = strace ]; then
  timeout 60 strace -f -c -o "$W/strace.txt" "$SER_BIN" -f "$HERE/cfg/stateful-tcp.cfg" -n "$N" -E -D >"$W/ser.log" 2>&1 &
else
  timeout 60 "$SER_BIN" -f "$HERE/cfg/stateful-tcp.cfg" -n "$N" -E -D >"$W/ser.log" 2>&1 &
fi
P=$!
sleep 1.5
SP=$(pgrep -n -f "^$SER_BIN -f $HERE/cfg/stateful-tcp.cfg")
timeout 40 sipp -sf "$ANCHORS/scen/uas-call.xml" -i 127.0.0.1 -p 15070 -nostdin >/dev/null 2>&1 &
U=$!
sleep 0.5
cs() { awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 } END { print v, n }' /proc/"$1"/task/*/status; }
read -r v0 n0 < <(cs "$SP")
t0=$(awk '{ print $14 + $15 }' /proc/"$SP"/stat)
calls=$((R * 5))
timeout 30 sipp -sf "$ANCHORS/scen/uac-call.xml" 127.0.0.1:15062 -t "$M" -i 127.0.0.1 -p 15090 -s test \
  -r "$R" -m "$calls" -nostdin -max_socket 15000 >/dev/null 2>&1
rc=$?
read -r v1 n1 < <(cs "$SP")
t1=$(awk '{ print $14 + $15 }' /proc/"$SP"/stat)
awk -v n="$N" -v m="$M" -v r="$R" -v c="$calls" -v rc="$rc" -v v="$((v1 - v0))" -v nv="$((n1 - n0))" -v t="$((t1 - t0))" \
  -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "shards=%s mode=%s rate=%s calls=%s sipp_rc=%s: voluntary switches/call %.1f, involuntary %.1f, CPU %.0f us/call\n",
    n, m, r, c, rc, v / c, nv / c, 1e6 * t / hz / c }'
kill "$U"; kill "$P" 2>/dev/null; wait
[ "$S" = strace ] && head -14 "$W/strace.txt"
exit 0
