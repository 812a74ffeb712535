#!/usr/bin/env bash
# HTTPS termination cost: splitgate over plain HTTP vs over TLS (same process, same
# run), and NGINX terminating TLS with the same certificate, all in front of the same
# two sites. Each proxy pinned to CPU 1, wrk and the sites to CPU 0 (as compare.sh).
# Usage (after `cargo build --release`): benches/tls-compare.sh
# Knobs: DUR (s per round, 8), CONN (64), ROUNDS (3). Needs nginx, wrk, openssl, taskset.
set -u
for t in nginx wrk openssl taskset; do command -v $t >/dev/null || { echo "needs $t"; exit 2; }; done
D=$(mktemp -d); chmod 755 "$D"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3; rm -rf "$D"; }
trap cleanup EXIT
DUR=${DUR:-8}; CONN=${CONN:-64}; ROUNDS=${ROUNDS:-3}; SPLITGATE=${SPLITGATE:-target/release/splitgate}
BASE=${BASE_PORT:-19200}; PA=$((BASE+1)); PB=$((BASE+2)); PS=$((BASE+10)); PT=$((BASE+11)); PN=$((BASE+12))

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout $D/key.pem -out $D/cert.pem 2>/dev/null
cat > $D/sites.conf <<C
worker_processes 1; daemon off; pid $D/sites.pid; error_log $D/sites.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PA; location / { return 200 "site=a\n"; } }
  server { listen 127.0.0.1:$PB; location / { return 200 "site=b\n"; } } }
C
cat > $D/nginx.conf <<C
worker_processes 1; daemon off; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream sites { server 127.0.0.1:$PA weight=7; server 127.0.0.1:$PB weight=3; keepalive 128; }
  server { listen 127.0.0.1:$PN ssl; ssl_certificate $D/cert.pem; ssl_certificate_key $D/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://sites; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
cat > $D/splitgate.toml <<C
[[listener]]
bind = "127.0.0.1:$PS"
[[listener]]
bind = "127.0.0.1:$PT"
tls = { cert = "$D/cert.pem", key = "$D/key.pem" }
[[site]]
name = "a"
weight = 7
backends = ["127.0.0.1:$PA"]
[[site]]
name = "b"
weight = 3
backends = ["127.0.0.1:$PB"]
C
taskset -c 0 nginx -c $D/sites.conf -p $D & PIDS+=($!)
taskset -c 1 nginx -c $D/nginx.conf -p $D & PIDS+=($!); NGX=$!
taskset -c 1 "$SPLITGATE" run --config $D/splitgate.toml >$D/splitgate.log 2>&1 & PIDS+=($!); SG=$!
sleep 1.5
kill -0 $SG 2>/dev/null || { echo "splitgate did not start:"; cat $D/splitgate.log; exit 1; }
cat > $D/report.lua <<'L'
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%.0f p99_us=%.0f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
L
ticks() { local s=0; for q in $1 $(pgrep -P $1); do s=$((s + $(awk '{print $14+$15}' /proc/$q/stat 2>/dev/null || echo 0))); done; echo $s; }
HZ=$(getconf CLK_TCK); : > $D/results
for r in $(seq $ROUNDS); do
  for t in "splitgate-http $SG http://127.0.0.1:$PS/" "splitgate-https $SG https://127.0.0.1:$PT/" "nginx-https $NGX https://127.0.0.1:$PN/"; do
    set -- $t; c0=$(ticks $2)
    out=$(taskset -c 0 wrk -t1 -c$CONN -d${DUR}s -s $D/report.lua $3 2>&1 | grep RESULT); c1=$(ticks $2)
    reqs=$(echo "$out" | sed -n 's/.*rps=\([0-9]*\).*/\1/p')
    cpu=$(awk -v d=$((c1 - c0)) -v hz=$HZ -v r=${reqs:-0} -v s=$DUR 'BEGIN{printf "%.1f", (r>0) ? d/hz*1e6/(r*s) : 0}')
    echo "round=$r target=$1 $out cpu_us_per_req=$cpu" | tee -a $D/results
  done
done
med() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { grep "target=$1 " $D/results | sed -n "s/.* $2=\([0-9.]*\).*/\1/p" | med; }
echo; echo "== medians over $ROUNDS rounds (conn=$CONN, ${DUR}s each, keep-alive)"
plain=$(field splitgate-http rps)
printf '%-16s %8s %8s %8s %10s %12s\n' target rps p50_us p99_us cpu_us/req vs_sg_http
for n in splitgate-http splitgate-https nginx-https; do
  printf '%-16s %8s %8s %8s %10s %12s\n' $n $(field $n rps) $(field $n p50_us) $(field $n p99_us) $(field $n cpu_us_per_req) \
    $(awk -v a=$(field $n rps) -v b=$plain 'BEGIN{printf "%.2f", (b>0)?a/b:0}')
done
