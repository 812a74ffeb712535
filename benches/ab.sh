#!/usr/bin/env bash
# A/B of splitgate builds: each build and HAProxy behind the same two NGINX sites,
# measured in interleaved rounds (so the shared machine's drift hits all alike); prints
# the median CPU per request, requests/s and peak RSS of each. Proxies on CPU 1, wrk
# and the sites on CPU 0, as in ../shared/bench/compare.sh.
# Usage: benches/ab.sh before=/tmp/splitgate-old after=target/release/splitgate
#        (NAME=BINARY[:VAR=VALUE] runs BINARY with VAR=VALUE in its environment)
# Knobs: ROUNDS (3), DUR (5 s), CONN (64), EXTRA (lines added to each config).
set -u
D=$(mktemp -d); chmod 755 $D; PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; rm -rf $D' EXIT
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONN=${CONN:-64}
cat > $D/sites.conf <<C
worker_processes 1; daemon off; pid $D/sites.pid; error_log $D/sites.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19701; location / { return 200 "site=a\n"; } }
  server { listen 127.0.0.1:19702; location / { return 200 "site=b\n"; } } }
C
printf 'global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\nfrontend f\n  bind 127.0.0.1:19710\n  default_backend b\nbackend b\n  balance roundrobin\n  server a 127.0.0.1:19701 weight 7\n  server b 127.0.0.1:19702 weight 3\n' > $D/hap.cfg
taskset -c 0 nginx -c $D/sites.conf -p $D & PIDS+=($!)
taskset -c 1 haproxy -f $D/hap.cfg -db >/dev/null 2>&1 & PIDS+=($!)
declare -A PID PORT; PID[haproxy]=$!; PORT[haproxy]=19710; names=haproxy
port=19720
for v in "$@"; do name=${v%%=*}; rest=${v#*=}; bin=${rest%%:*}; envs=""; [[ "$rest" == *:* ]] && envs=${rest#*:}
  port=$((port+1))
  printf '[[listener]]\nbind = "127.0.0.1:%s"\n%s\n[[site]]\nname = "a"\nweight = 7\nbackends = ["127.0.0.1:19701"]\n[[site]]\nname = "b"\nweight = 3\nbackends = ["127.0.0.1:19702"]\n' $port "${EXTRA:-}" > $D/$name.toml
  env $envs taskset -c 1 $bin run --config $D/$name.toml > $D/$name.log 2>&1 & PIDS+=($!)
  PID[$name]=$!; PORT[$name]=$port; names="$names $name"
done
sleep 1.5
ticks() { local s=0; for q in $1 $(pgrep -P $1); do s=$((s + $(awk '{print $14+$15}' /proc/$q/stat 2>/dev/null || echo 0))); done; echo $s; }
HZ=$(getconf CLK_TCK)
for r in $(seq $ROUNDS); do for n in $names; do
  c0=$(ticks ${PID[$n]})
  out=$(taskset -c 0 wrk -t1 -c$CONN -d${DUR}s --latency http://127.0.0.1:${PORT[$n]}/ 2>&1)
  c1=$(ticks ${PID[$n]})
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}'); p99=$(echo "$out" | awk '/ 99%/{print $2}')
  cpu=$(awk -v d=$((c1-c0)) -v hz=$HZ -v r=$rps -v s=$DUR 'BEGIN{printf "%.1f", d/hz*1e6/(r*s)}')
  echo "$n rps=$rps p99=$p99 cpu_us=$cpu" >> $D/res; echo "round $r $n rps=$rps p99=$p99 cpu_us=$cpu"
done; done
for n in $names; do
  echo "MEDIAN $n cpu_us=$(grep "^$n " $D/res | sed 's/.*cpu_us=//' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}') rps=$(grep "^$n " $D/res | sed 's/.*rps=\([0-9.]*\).*/\1/' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}') rss=$(grep VmHWM /proc/${PID[$n]}/status | awk '{print $2}')kB"
done
