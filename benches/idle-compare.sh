#!/usr/bin/env bash
# Memory per idle client connection, splitgate against HAProxy and NGINX in one run:
# each proxy (one worker/thread, pinned to CPU 1) fronts the same NGINX site; N
# keep-alive connections each send one GET, read the answer and stay open; the
# proxy's RSS before and after gives KiB per connection. MODE=h2: HTTP/2 clients
# (prior knowledge), each connection one request, then idle.
# Usage (from the project root, after `cargo build --release`): benches/idle-compare.sh
# Knobs: N (4000; 2000 for h2), MODE (h1|h2), SPLITGATE (binary, target/release/splitgate).
# Needs: nginx, haproxy, python3 (h2: the h2 frames are written by hand, no library).
set -u
MODE=${MODE:-h1}
if [ "$MODE" = h2 ]; then N=${N:-2000}; else N=${N:-4000}; fi
SPLITGATE=${SPLITGATE:-target/release/splitgate}
ulimit -n $((N * 4 + 2000)) 2>/dev/null || { echo "idle-compare.sh: cannot raise the open-file limit"; exit 2; }
D=$(mktemp -d); chmod 755 "$D"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3; rm -rf "$D"; }
trap cleanup EXIT
BASE=${BASE_PORT:-19500}; PA=$((BASE+1)); PN=$((BASE+2)); PH=$((BASE+3)); PS=$((BASE+4))
[ "$MODE" = h2 ] && { NGX_H2=" http2"; HAP_H2=" proto h2"; }
cat > $D/site.conf <<C
worker_processes 1; daemon off; pid $D/site.pid; error_log $D/site.err;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  server { listen 127.0.0.1:$PA; location / { return 200 "ok\n"; } } }
C
cat > $D/nginx.conf <<C
worker_processes 1; daemon off; pid $D/nginx.pid; error_log $D/nginx.err;
worker_rlimit_nofile $((N * 2 + 1000));
events { worker_connections $((N * 2 + 100)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream site { server 127.0.0.1:$PA; keepalive 64; }
  server { listen 127.0.0.1:$PN${NGX_H2:-}; location / { proxy_pass http://site; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
cat > $D/haproxy.cfg <<C
global
  nbthread 1
  maxconn $((N + 100))
defaults
  mode http
  timeout connect 2s
  timeout client 600s
  timeout server 30s
  timeout http-keep-alive 600s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$PH${HAP_H2:-}
  default_backend site
backend site
  server a 127.0.0.1:$PA
C
printf '[[listener]]\nbind = "127.0.0.1:%s"\n[timeouts]\nidle = "10m"\n[limits]\nmax_connections = %s\n[[site]]\nname = "a"\nweight = 1\nbackends = ["127.0.0.1:%s"]\n' \
  $PS $((N * 2)) $PA > $D/sg.toml
taskset -c 0 nginx -c $D/site.conf -p $D & PIDS+=($!)
taskset -c 1 nginx -c $D/nginx.conf -p $D & PIDS+=($!); NGX=$!
taskset -c 1 haproxy -f $D/haproxy.cfg -db >/dev/null 2>&1 & PIDS+=($!); HAP=$!
taskset -c 1 "$SPLITGATE" run --config $D/sg.toml >$D/sg.log 2>&1 & PIDS+=($!); SG=$!
sleep 1.5
# The process that holds the connections: NGINX's worker, not its master.
worker() { local c; c=$(pgrep -P $1 | head -1); echo ${c:-$1}; }
for target in "splitgate $PS $SG" "haproxy $PH $HAP" "nginx $PN $(worker $NGX)"; do
  set -- $target
  python3 - "$1" "$2" "$3" "$N" "$MODE" <<'P'
import asyncio, sys
name, port, pid, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
# HEADERS (END_STREAM|END_HEADERS) for GET / with literal, never-indexed fields (HPACK 6.2.3).
def lit(name, value): return b"\x10" + bytes([len(name)]) + name + bytes([len(value)]) + value
GET = lit(b":method", b"GET") + lit(b":scheme", b"http") + lit(b":path", b"/") + lit(b":authority", b"idle")
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if mode == "h2":
        w.write(PREFACE + frame(4, 0, 0) + frame(1, 5, 1, GET)); await w.drain()
        got = b""
        # Until the response's DATA with END_STREAM (the body "ok\n"), acking SETTINGS.
        while b"ok\n" not in got:
            chunk = await r.read(65536)
            if not chunk: raise SystemExit(f"{name}: closed")
            got += chunk
        w.write(frame(4, 1, 0)); await w.drain()
    else:
        w.write(b"GET / HTTP/1.1\r\nhost: idle\r\n\r\n"); await w.drain()
        await r.readuntil(b"ok\n")
    held.append((r, w))
async def main():
    before = rss()
    held = []
    for start in range(0, n, 100):
        await asyncio.gather(*(one(held) for _ in range(start, min(n, start + 100))))
    await asyncio.sleep(2)
    after = rss()
    print(f"RESULT {name} {mode}: {len(held)} idle connections, RSS {before} kB -> {after} kB, "
          f"{(after - before) / max(1, len(held)):.2f} KiB per connection")
asyncio.run(main())
P
done
