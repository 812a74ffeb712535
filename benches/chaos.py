#!/usr/bin/env python3
"""Chaos and soak runs against a real splitgate (not in the default test run).

Two sites of two backends each (small threaded HTTP servers), splitgate in front,
steady load of sequential GETs from several client threads. In chaos mode, every few
seconds one backend of site b is killed and restarted, frozen (SIGSTOP) and thawed, or
slowed (frozen and thawed in short bursts), and splitgate gets a SIGHUP with new
weights. Site a is never touched, so a healthy site always exists: every failed GET
is a violation. In soak mode only the reloads happen. RSS and open file descriptors
of splitgate are sampled every 10 s.

Usage (after `cargo build --release`):
  benches/chaos.py --minutes 5            # chaos
  benches/chaos.py --minutes 10 --soak    # soak
Exit status 1 when a GET failed or RSS grew without bound (last sample > 2x the
sample after warm-up and > 64 MB), else 0.
"""
import argparse, http.client, os, random, signal, socket, subprocess, sys, tempfile, threading, time

BACKEND = r'''
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def config(listen, admin, ports, wa, wb):
    return f'''[[listener]]
bind = "127.0.0.1:{listen}"
[admin]
bind = "127.0.0.1:{admin}"
[timeouts]
connect = "500ms"
response = "2s"
[health]
interval = "500ms"
timeout = "300ms"
[retry]
attempts = 3
budget = 0.5
[[site]]
name = "a"
weight = {wa}
backends = ["127.0.0.1:{ports[0]}", "127.0.0.1:{ports[1]}"]
[[site]]
name = "b"
weight = {wb}
backends = ["127.0.0.1:{ports[2]}", "127.0.0.1:{ports[3]}"]
'''

def proc_status(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--soak", action="store_true")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--binary", default="target/release/splitgate")
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    script = os.path.join(work, "backend.py")
    open(script, "w").write(BACKEND)
    ports = [free_port() for _ in range(4)]
    names = ["a1", "a2", "b1", "b2"]
    backends = {}
    def start_backend(i):
        backends[i] = subprocess.Popen([sys.executable, script, names[i], str(ports[i])], stderr=subprocess.DEVNULL)
    for i in range(4):
        start_backend(i)
    listen, admin = free_port(), free_port()
    path = os.path.join(work, "splitgate.toml")
    open(path, "w").write(config(listen, admin, ports, 50, 50))
    proxy = subprocess.Popen([args.binary, "run", "--config", path], stderr=open(os.path.join(work, "log"), "w"))
    time.sleep(1.5)

    stop = threading.Event()
    lock = threading.Lock()
    stats = {"sent": 0, "ok": 0}
    failures = {}
    def client():
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                cause = None if response.status == 200 else f"status {response.status}"
            except Exception as e:  # a connection-level failure
                cause = type(e).__name__
                conn = None
            with lock:
                stats["sent"] += 1
                if cause is None:
                    stats["ok"] += 1
                else:
                    failures[cause] = failures.get(cause, 0) + 1
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()

    samples = []
    actions = {}
    end = time.time() + args.minutes * 60
    next_sample = time.time()
    while time.time() < end:
        if time.time() >= next_sample:
            samples.append(proc_status(proxy.pid))
            next_sample += 10
        time.sleep(random.uniform(1.0, 3.0))
        action = "reload" if args.soak else random.choice(["kill", "freeze", "slow", "reload"])
        actions[action] = actions.get(action, 0) + 1
        victim = random.choice([2, 3])
        if action == "reload":
            wa = random.randint(1, 100)
            open(path, "w").write(config(listen, admin, ports, wa, 100 - wa))
            proxy.send_signal(signal.SIGHUP)
        elif action == "kill":
            backends[victim].kill(); backends[victim].wait()
            time.sleep(random.uniform(0.5, 3.0))
            start_backend(victim)
        elif action == "freeze":
            backends[victim].send_signal(signal.SIGSTOP)
            time.sleep(random.uniform(0.5, 4.0))
            backends[victim].send_signal(signal.SIGCONT)
        elif action == "slow":
            for _ in range(10):
                backends[victim].send_signal(signal.SIGSTOP); time.sleep(0.15)
                backends[victim].send_signal(signal.SIGCONT); time.sleep(0.05)
    samples.append(proc_status(proxy.pid))
    stop.set()
    for t in threads:
        t.join(timeout=15)
    retried = 0
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        conn.request("GET", "/metrics")
        for line in conn.getresponse().read().decode().splitlines():
            if line.startswith("splitgate_retries_total"):
                retried += int(float(line.rsplit(" ", 1)[1]))
    except Exception:
        retried = -1
    with open(f"/proc/{proxy.pid}/status") as f:
        peak = next((int(l.split()[1]) for l in f if l.startswith("VmHWM")), 0)
    proxy.terminate(); proxy.wait(timeout=40)
    for p in backends.values():
        p.kill()
    failed = sum(failures.values())
    print(f"mode={'soak' if args.soak else 'chaos'} minutes={args.minutes} clients={args.clients}")
    print(f"actions: {actions}")
    print(f"requests sent={stats['sent']} ok={stats['ok']} failed={failed} by cause: {failures or '-'} retried={retried}")
    print(f"splitgate RSS kB (start, max, end): {samples[0][0]}, {max(s[0] for s in samples)}, {samples[-1][0]}; peak {peak}")
    print(f"splitgate open fds (start, max, end): {samples[0][1]}, {max(s[1] for s in samples)}, {samples[-1][1]}")
    grew = len(samples) > 2 and samples[-1][0] > 2 * samples[1][0] and samples[-1][0] > 64 * 1024
    if failed or grew:
        print("FAIL: " + ("a GET failed while site a was healthy; " if failed else "") + ("memory grew" if grew else ""))
        return 1
    print("PASS")
    return 0

if __name__ == "__main__":
    sys.exit(main())
