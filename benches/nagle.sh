#!/usr/bin/env bash
# Latency behind a backend that keeps Nagle's algorithm on and writes each response's
# head and body in two sends (Python's http.server, as many small services do):
# sequential requests on one kept-alive client connection (wrk -c1), direct and through
# splitgate (and NGINX/HAProxy when installed), median and p99 of each.
# Usage (from the project root, after `cargo build --release`): benches/nagle.sh
# Knobs: DUR (s per target, 5), SPLITGATE (binary, target/release/splitgate).
set -u
command -v wrk >/dev/null || { echo "nagle.sh: wrk not found (apt-get install wrk)"; exit 2; }
DUR=${DUR:-5}; SPLITGATE=${SPLITGATE:-target/release/splitgate}
D=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PB=$(port); PS=$(port); PN=$(port); PH=$(port)
cat > $D/backend.py <<'P'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"site=a\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()          # first send: the head
        self.wfile.write(body)      # second send: the body (Nagle holds it for an ACK)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
P
python3 $D/backend.py $PB 2>/dev/null & PIDS+=($!)
cat > $D/sg.toml <<C
[[listener]]
bind = "127.0.0.1:$PS"
[[site]]
name = "a"
weight = 1
backends = ["127.0.0.1:$PB"]
health = { path = "/" }
C
"$SPLITGATE" run --config $D/sg.toml >$D/sg.log 2>&1 & PIDS+=($!)
targets="direct=$PB splitgate=$PS"
if command -v nginx >/dev/null; then
  cat > $D/nginx.conf <<C
worker_processes 1; daemon off; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 1024; }
http { access_log off; upstream a { server 127.0.0.1:$PB; keepalive 16; }
  server { listen 127.0.0.1:$PN; location / { proxy_pass http://a; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
  nginx -c $D/nginx.conf -p $D & PIDS+=($!); targets="$targets nginx=$PN"
fi
if command -v haproxy >/dev/null; then
  printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:%s\n  default_backend b\nbackend b\n  server a 127.0.0.1:%s\n' $PH $PB > $D/hap.cfg
  haproxy -f $D/hap.cfg -db >/dev/null 2>&1 & PIDS+=($!); targets="$targets haproxy=$PH"
fi
sleep 1.5
cat > $D/report.lua <<'L'
done = function(summary, latency, requests)
  io.write(string.format("requests=%d p50_us=%.0f p99_us=%.0f errors=%d\n", summary.requests,
    latency:percentile(50), latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.status))
end
L
for t in $targets; do
  echo "$t: $(wrk -t1 -c1 -d${DUR}s -s $D/report.lua http://127.0.0.1:${t#*=}/ 2>&1 | grep requests=)"
done
