#!/usr/bin/env bash
# Requests/s against worker threads: splitgate at `workers` = 1..MAX and HAProxy at
# `nbthread` = 1..MAX, in interleaved rounds, behind the same NGINX site (one worker
# process per CPU given to the sites). Nothing is pinned: on a machine with few cores the
# load generator and the site share the CPUs with the proxy, so read the ratios between
# the two proxies at the same thread count, not the absolute numbers.
# Usage (from the project root, after `cargo build --release`): benches/scaling.sh
# Knobs: MAX (threads, 2), ROUNDS (3), DUR (s, 5), CONN (connections, 128),
#        SPLITGATE (binary, target/release/splitgate), BASE (a second splitgate binary,
#        e.g. an earlier build, measured in the same rounds as base-N).
# Needs: nginx, haproxy, wrk (Debian: nginx-light haproxy wrk).
set -u
MAX=${MAX:-2}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONN=${CONN:-128}
SPLITGATE=${SPLITGATE:-target/release/splitgate}
D=$(mktemp -d); chmod 755 $D; PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; rm -rf $D' EXIT
cat > $D/site.conf <<C
worker_processes $MAX; daemon off; pid $D/site.pid; error_log $D/site.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19901; location / { return 200 "site=a\n"; } } }
C
nginx -c $D/site.conf -p $D & PIDS+=($!)
declare -A PID PORT; names=""
for t in $(seq $MAX); do
  printf 'global\n  nbthread %s\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\nfrontend f\n  bind 127.0.0.1:%s\n  default_backend b\nbackend b\n  server a 127.0.0.1:19901\n' $t $((19910+t)) > $D/hap$t.cfg
  haproxy -f $D/hap$t.cfg -db >/dev/null 2>&1 & PIDS+=($!); PID[haproxy-$t]=$!; PORT[haproxy-$t]=$((19910+t))
  printf 'workers = %s\n[[listener]]\nbind = "127.0.0.1:%s"\n[[site]]\nname = "a"\nweight = 1\nbackends = ["127.0.0.1:19901"]\n' $t $((19920+t)) > $D/sg$t.toml
  "$SPLITGATE" run --config $D/sg$t.toml > $D/sg$t.log 2>&1 & PIDS+=($!); PID[splitgate-$t]=$!; PORT[splitgate-$t]=$((19920+t))
  names="$names haproxy-$t splitgate-$t"
  if [ -n "${BASE:-}" ]; then
    sed "s/:$((19920+t))\"/:$((19930+t))\"/" $D/sg$t.toml > $D/base$t.toml
    "$BASE" run --config $D/base$t.toml > $D/base$t.log 2>&1 & PIDS+=($!); PID[base-$t]=$!; PORT[base-$t]=$((19930+t))
    names="$names base-$t"
  fi
done
sleep 1.5
ticks() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
for r in $(seq $ROUNDS); do for n in $names; do
  c0=$(ticks ${PID[$n]})
  out=$(wrk -t2 -c$CONN -d${DUR}s http://127.0.0.1:${PORT[$n]}/ 2>&1)
  c1=$(ticks ${PID[$n]})
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  cpu=$(awk -v d=$((c1-c0)) -v hz=$HZ -v r=$rps -v s=$DUR 'BEGIN{printf "%.1f", d/hz*1e6/(r*s)}')
  echo "$n rps=$rps cpu_us=$cpu" >> $D/res; echo "round $r $n rps=$rps cpu_us=$cpu"
done; done
for n in $names; do
  echo "MEDIAN $n rps=$(grep "^$n " $D/res | sed 's/.*rps=\([0-9.]*\).*/\1/' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}') cpu_us=$(grep "^$n " $D/res | sed 's/.*cpu_us=//' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
done
