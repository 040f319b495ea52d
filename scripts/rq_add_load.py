#!/usr/bin/env python3
"""Request-queue batch-add load (the T7 loop of troupe-bench's rq_batch_add) with the server's
per-batch costs read from /proc (docs/benchmarks.md, "Session 12: request-queue batch add").

    python3 scripts/rq_add_load.py BIN [PREFILL=20000] [BATCHES=8000]

Starts `BIN serve` pinned to CPU 0 on a fresh data dir, fills one queue with PREFILL requests,
then adds BATCHES more in batches of 25 (~250-byte requests whose uniqueKey is the url, as the
bench's) over 5 keep-alive connections, and prints per batch: the server's CPU time (user and
system, all threads), its write and read system calls and bytes (/proc/PID/io: WAL frames,
checkpoints, page reads, and the sockets), and the database's size at the end. The Python
client is slower than the bench's, so commits carry fewer adds: compare builds with this
script, not with the bench's figures. Standard library only.
"""
import http.client, json, os, shutil, socket, subprocess, sys, tempfile, threading, time

bin_ = sys.argv[1]
prefill = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
nb = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
TOK = "rqaddload"
H = {"Authorization": f"Bearer {TOK}", "Content-Type": "application/json"}
dd = tempfile.mkdtemp(prefix="rqaddload")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = dict(os.environ, TROUPE_TOKEN=TOK, RUST_LOG="warn")
srv = subprocess.Popen(["taskset", "-c", "0", bin_, "serve", "--listen", f"127.0.0.1:{port}",
                        "--data-dir", dd], env=env, stdout=subprocess.DEVNULL,
                       stderr=open(dd + ".log", "w"))


def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def call(c, method, path, body=None):
    c.request(method, path, body=body, headers=H)
    r = c.getresponse()
    data = r.read()
    if r.status not in (200, 201):
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


deadline = time.time() + 300
while True:
    try:
        call(conn(), "GET", "/v2/users/me")
        break
    except (OSError, http.client.HTTPException):
        if srv.poll() is not None or time.time() > deadline:
            sys.exit("server did not start")
        time.sleep(0.2)
q = call(conn(), "POST", "/v2/request-queues?name=rq-add-load")["data"]["id"]


def request(n):
    url = f"https://example.com/catalog/page-{n}?sort=price&view=grid&ref=bench"
    return {"url": url, "uniqueKey": url, "method": "GET",
            "userData": {"label": "LIST", "depth": n % 7, "seed": "troupe-bench"}}


lock = threading.Lock()


def run(batches):
    def worker():
        c = conn()
        while True:
            with lock:
                if not batches:
                    return
                first = batches.pop()
            body = json.dumps([request(n) for n in range(first, first + 25)])
            call(c, "POST", f"/v2/request-queues/{q}/requests/batch", body)
    ts = [threading.Thread(target=worker) for _ in range(5)]
    [t.start() for t in ts]
    [t.join() for t in ts]


def stats(pid):
    user = system = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        user += int(f[11]); system += int(f[12])
    io = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines() if line)
    return [user, system, int(io["wchar"]), int(io["syscw"]), int(io["rchar"]), int(io["syscr"])]


run(list(range(0, prefill, 25)))
time.sleep(0.5)
before, t0 = stats(srv.pid), time.time()
run(list(range(prefill, prefill + nb * 25, 25)))
elapsed = time.time() - t0
d = [b - a for a, b in zip(before, stats(srv.pid))]
us = 1e6 / os.sysconf("SC_CLK_TCK") / nb
db = sum(os.path.getsize(os.path.join(dd, f)) for f in os.listdir(dd) if f == "troupe.db")
info = call(conn(), "GET", f"/v2/request-queues/{q}")["data"]
print(f"{bin_} batches={nb} {nb / elapsed:.0f}/s cpu/batch={(d[0] + d[1]) * us:.1f}us "
      f"(user {d[0] * us:.1f} sys {d[1] * us:.1f}) wchar/batch={d[2] / nb:.0f} "
      f"writes/batch={d[3] / nb:.2f} rchar/batch={d[4] / nb:.0f} reads/batch={d[5] / nb:.2f} "
      f"db={db / 1e6:.1f}MB total={info['totalRequestCount']}")
srv.terminate()
srv.wait()
shutil.rmtree(dd, ignore_errors=True)
