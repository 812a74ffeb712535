#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable on a
# noisy shared machine (CPU time per request drifts by 20% from run to run; instruction
# counts of the same binary and load do not), so small changes can be judged. The
# kernel's share (the syscalls, the same for every build) is not counted.
# Each build serves N1 then N2 small requests (h2load --h1, 8 connections) behind one
# NGINX site; (Ir(N2) - Ir(N1)) / (N2 - N1) removes start-up and shutdown.
# Usage: benches/instructions.sh before=/tmp/splitgate-old after=target/release/splitgate
# Knobs: N1 (2000), N2 (8000), H2=1 (HTTP/2 clients, h2c prior knowledge).
# Needs: valgrind, nginx, h2load (Debian: valgrind nginx-light nghttp2-client).
set -u
N1=${N1:-2000}; N2=${N2:-8000}
D=$(mktemp -d); chmod 755 $D; PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; rm -rf $D' EXIT
cat > $D/site.conf <<C
worker_processes 1; daemon off; pid $D/site.pid; error_log $D/site.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19801; location / { return 200 "site=a\n"; } } }
C
nginx -c $D/site.conf -p $D & PIDS+=($!)
printf 'workers = 1\n[[listener]]\nbind = "127.0.0.1:19802"\n[[site]]\nname = "a"\nweight = 1\nbackends = ["127.0.0.1:19801"]\n' > $D/sg.toml
if [ "${H2:-0}" = 1 ]; then PROTO=""; else PROTO="--h1"; fi
count() { # binary requests -> instructions
  valgrind --tool=callgrind --callgrind-out-file=$D/cg.out "$1" run --config $D/sg.toml >$D/sg.log 2>&1 & local vg=$!
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19802/ && break; sleep 0.2; done
  h2load $PROTO -n "$2" -c 8 -m 1 http://127.0.0.1:19802/ >$D/h2load.log 2>&1
  kill -INT $vg; wait $vg 2>/dev/null
  awk '/^summary:|^totals:/{print $2; exit}' $D/cg.out
}
for v in "$@"; do name=${v%%=*}; bin=${v#*=}
  a=$(count "$bin" "$N1"); b=$(count "$bin" "$N2")
  awk -v n=$name -v a=$a -v b=$b -v n1=$N1 -v n2=$N2 'BEGIN{printf "%s: %.0f instructions per request (user space)\n", n, (b-a)/(n2-n1)}'
done
