#!/usr/bin/env bash
# The benchmarks' TLS certificate: an ECDSA P-256 self-signed one for 127.0.0.1 as cert.pem and
# key.pem in DIR (default /tmp/ser-bench/tls, the path bench/cfg/*tls*.cfg and
# bench/kamailio/*tls*.cfg name), made once and kept. Used by compare-tls.sh and compare-tcp.sh.
set -eu
DIR=${1:-/tmp/ser-bench/tls}
mkdir -p "$DIR"
if [ ! -s "$DIR/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/key.pem" \
    -out "$DIR/cert.pem" -days 3650 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
fi
