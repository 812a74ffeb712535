#!/usr/bin/env bash
# CPU per request of an h2c site against an HTTP/1.1 site: h2load (HTTP/2 clients,
# prior knowledge) through splitgate to one NGINX answering the same 7-byte body on two
# ports, one HTTP/1.1, one h2c. Only the site's protocol differs. Splitgate on CPU 1,
# h2load and NGINX on CPU 0; rounds interleaved (h1, h2c, h1, h2c...), one warm-up
# each; the proxy's utime+stime (its process and children, /proc/PID/stat) around each
# run, divided by the requests that succeeded. Prints each round, then the medians.
# Usage: benches/h2c.sh   (after cargo build --release)
# Knobs: SPLITGATE (target/release/splitgate), N (200000 requests), C (32 connections),
# M (10 streams each), ROUNDS (3).
set -u
BIN=${SPLITGATE:-target/release/splitgate}; N=${N:-200000}; C=${C:-32}; M=${M:-10}; ROUNDS=${ROUNDS:-3}
for t in nginx h2load taskset; do command -v $t >/dev/null || { echo "h2c.sh: $t not found"; exit 2; }; done
D=$(mktemp -d); chmod 755 "$D"; PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; rm -rf "$D"' EXIT
cat > "$D/site.conf" <<C
worker_processes 1; daemon off; pid $D/site.pid; error_log $D/site.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; http2_max_concurrent_streams 1024;
  server { listen 127.0.0.1:19801;       location / { return 200 "site=a\n"; } }
  server { listen 127.0.0.1:19802 http2; location / { return 200 "site=a\n"; } } }
C
taskset -c 0 nginx -c "$D/site.conf" -p "$D" & PIDS+=($!)
declare -A PID PORT
for v in h1:19811:19801: h2c:19812:19802:h2c; do
  IFS=: read -r name port backend protocol <<<"$v"
  {
    printf '[[listener]]\nbind = "127.0.0.1:%s"\n[[site]]\nname = "a"\nweight = 1\n' "$port"
    [ -n "$protocol" ] && printf 'protocol = "%s"\n' "$protocol"
    printf 'backends = ["127.0.0.1:%s"]\n' "$backend"
  } > "$D/$name.toml"
  taskset -c 1 "$BIN" run --config "$D/$name.toml" > "$D/$name.log" 2>&1 & PIDS+=($!)
  PID[$name]=$!; PORT[$name]=$port
done
sleep 1.5
ticks() { local s=0; for q in $1 $(pgrep -P $1); do s=$((s + $(awk '{print $14+$15}' /proc/$q/stat 2>/dev/null || echo 0))); done; echo $s; }
HZ=$(getconf CLK_TCK)
load() { taskset -c 0 h2load -n $1 -c $C -m $M "http://127.0.0.1:${PORT[$2]}/" 2>&1; }
for n in h1 h2c; do load 20000 $n > /dev/null; done
for r in $(seq "$ROUNDS"); do for n in h1 h2c; do
  c0=$(ticks ${PID[$n]}); out=$(load $N $n); c1=$(ticks ${PID[$n]})
  ok=$(echo "$out" | awk '/^requests:/{print $8}'); rps=$(echo "$out" | awk '/^finished in/{print $4}')
  cpu=$(awk -v d=$((c1 - c0)) -v hz=$HZ -v ok=$ok 'BEGIN{printf "%.2f", d / hz * 1e6 / ok}')
  echo "$n $cpu $rps" >> "$D/res"; echo "round $r $n succeeded=$ok req/s=$rps cpu_us_per_req=$cpu"
done; done
for n in h1 h2c; do
  awk -v n=$n '$1 == n {print $2, $3}' "$D/res" | sort -n | awk -v n=$n '{c[NR] = $1; r[NR] = $2} END {m = int((NR + 1) / 2); printf "median %s cpu_us_per_req=%s req/s(same round)=%s\n", n, c[m], r[m]}'
done | tee "$D/medians"
awk '{split($3, a, "="); v[$2] = a[2]} END {printf "h2c / h1 CPU per request: %.2fx\n", v["h2c"] / v["h1"]}' "$D/medians"
