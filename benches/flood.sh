#!/usr/bin/env bash
# Memory given back after a flood: N connections each send an unfinished request head
# of HEAD bytes (under `max_header_bytes`) and hold it; then all close. Prints the
# proxy's RSS before, at the peak, and 3, 10 and 30 s after the last connection closed (health probes
# every second, as in any deployment).
# Usage (from the project root, after `cargo build --release`): benches/flood.sh
# Knobs: N (connections, 3000), HEAD (bytes of each unfinished head, 60000),
# ROUNDS (floods one after another, 2: the second shows whether memory is reused),
# SPLITGATE (binary, target/release/splitgate).
set -u
N=${N:-3000}; HEAD=${HEAD:-60000}; ROUNDS=${ROUNDS:-2}; SPLITGATE=${SPLITGATE:-target/release/splitgate}
ulimit -n $((N + 1000)) 2>/dev/null || { echo "flood.sh: cannot raise the open-file limit to $((N + 1000))"; exit 2; }
D=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PB=$(port); PS=$(port)
python3 -m http.server --bind 127.0.0.1 $PB >/dev/null 2>&1 & PIDS+=($!)
printf '[[listener]]\nbind = "127.0.0.1:%s"\n[timeouts]\nclient_header = "10m"\nidle = "10m"\n[[site]]\nname = "a"\nweight = 1\nbackends = ["127.0.0.1:%s"]\nhealth = { path = "/", interval = "1s" }\n' $PS $PB > $D/sg.toml
"$SPLITGATE" run --config $D/sg.toml >$D/sg.log 2>&1 & SG=$!; PIDS+=($SG)
sleep 1
python3 - $PS $N $HEAD $ROUNDS $SG <<'P'
import asyncio, sys
port, n, head, rounds, pid = map(int, sys.argv[1:6])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) // 1024
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nhost: flood\r\nx-pad: " + b"a" * (head - 40)); await w.drain()
    held.append(w)
async def flood():
    held, peak = [], rss()
    for start in range(0, n, 200):
        await asyncio.gather(*(one(held) for _ in range(start, min(n, start + 200))))
        peak = max(peak, rss())
    await asyncio.sleep(2)
    peak = max(peak, rss())
    for w in held: w.close()
    await asyncio.sleep(3)
    after3 = rss()
    await asyncio.sleep(7)
    after10 = rss()
    await asyncio.sleep(20)
    return len(held), peak, after3, after10, rss()
async def main():
    before = rss()
    for i in range(rounds):
        held, peak, after3, after10, after30 = await flood()
        print(f"flood {i + 1}: {held} connections x {head} bytes: RSS {before} MB before, {peak} MB peak; "
              f"after they closed: {after3} MB at 3 s, {after10} MB at 10 s, {after30} MB at 30 s")
asyncio.run(main())
P
