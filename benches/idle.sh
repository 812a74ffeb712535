#!/usr/bin/env bash
# Memory per idle client connection: opens N keep-alive connections to splitgate (each
# sends one GET and reads its answer, then stays open and idle), and reports the
# proxy's RSS before and after, per connection.
# Usage (from the project root, after `cargo build --release`): benches/idle.sh
# Knobs: N (connections, 10000), SPLITGATE (binary, target/release/splitgate).
set -u
N=${N:-10000}; SPLITGATE=${SPLITGATE:-target/release/splitgate}
ulimit -n $((N + 1000)) 2>/dev/null || { echo "idle.sh: cannot raise the open-file limit to $((N + 1000))"; exit 2; }
D=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PB=$(port); PS=$(port)
python3 -c "
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '3'); self.end_headers(); self.wfile.write(b'ok\n')
    def log_message(self, *a): pass
ThreadingHTTPServer.request_queue_size = 4096
ThreadingHTTPServer(('127.0.0.1', $PB), H).serve_forever()" 2>/dev/null & PIDS+=($!)
printf '[[listener]]\nbind = "127.0.0.1:%s"\n[timeouts]\nidle = "10m"\n[[site]]\nname = "a"\nweight = 1\nbackends = ["127.0.0.1:%s"]\nhealth = { path = "/" }\n' $PS $PB > $D/sg.toml
"$SPLITGATE" run --config $D/sg.toml >$D/sg.log 2>&1 & SG=$!; PIDS+=($SG)
sleep 1
rss() { awk '/VmRSS/{print $2}' /proc/$SG/status; }
python3 - $PS $N $(rss) $SG <<'P'
import asyncio, sys
port, n, before, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nhost: idle\r\n\r\n"); await w.drain()
    await r.readuntil(b"ok\n")
    held.append(w)
async def main():
    held = []
    for start in range(0, n, 100):
        await asyncio.gather(*(one(held) for _ in range(start, min(n, start + 100))))
    await asyncio.sleep(2)
    after = rss()
    print(f"{len(held)} idle connections: RSS {before} kB -> {after} kB, "
          f"{(after - before) * 1024 / max(1, len(held)) / 1024:.1f} KiB per connection")
asyncio.run(main())
P
