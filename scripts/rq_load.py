#!/usr/bin/env python3
"""Request-queue consumer load (the T9 loop of troupe-bench's rq_consume) for profiling a server
binary, natively or under callgrind (docs/benchmarks.md, the "request-queue consumers (T9)"
sections).

    python3 scripts/rq_load.py BIN [--mode consume|lockonly] [--ops 3000] [--seed 70000]
                               [--clients 8] [--callgrind OUT] [--perf OUT] [--data-dir DIR]

Starts `BIN serve` on a fresh data dir (TROUPE_TOKEN set), seeds one queue with --seed requests
(~250-byte requests as the bench's, batches of 25 over 5 connections), then runs --clients
consumers until --ops locked requests have been processed:

consume:  POST head/lock?limit=25&lockSecs=60&clientKey=..., then for each locked request a
          PUT .../requests/{id} with handledAt (the lock answer's fields, as the bench sends
          them) or, for 1 in 20, DELETE .../requests/{id}/lock. One op = one locked request
          processed (handled or given back).
lockonly: only the head/lock calls (the locks are left to lapse). One op = one locked request.

With --callgrind OUT the server runs under `valgrind --tool=callgrind` with instrumentation off during
start-up and seeding (`callgrind_control -i on` just before the consumers start, a dump when they
are done): divide the inclusive costs in OUT.* by the printed op count, e.g.
    callgrind_annotate --inclusive=yes OUT.<pid>.1 | head -60
With --perf OUT, `perf record -g` is attached to the server for the consume phase only.
Prints ops, elapsed, ops/s, the server's CPU time per op (from /proc/PID/stat) and the queue's
final counters. Standard library only.
"""
import argparse, http.client, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("--mode", choices=["consume", "lockonly"], default="consume")
ap.add_argument("--ops", type=int, default=3000)
ap.add_argument("--seed", type=int, default=70000)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--callgrind", metavar="OUT")
ap.add_argument("--perf", metavar="OUT")
ap.add_argument("--data-dir")
args = ap.parse_args()

TOK = "rqloadtoken"
H = {"Authorization": f"Bearer {TOK}"}
HJ = dict(H, **{"Content-Type": "application/json"})
data_dir = args.data_dir or tempfile.mkdtemp(prefix="rqload")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = dict(os.environ, TROUPE_TOKEN=TOK, RUST_LOG="warn")
cmd = [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
if args.callgrind:
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={args.callgrind}.%p"] + cmd
server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(data_dir + ".log", "w"))


def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def call(c, method, path, body=None, ok=(200, 201)):
    c.request(method, path, body=body, headers=HJ if body is not None else H)
    r = c.getresponse()
    data = r.read()
    if r.status not in ok:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


deadline = time.time() + 300
while True:
    try:
        call(conn(), "GET", "/v2/users/me")
        break
    except (OSError, http.client.HTTPException):
        if server.poll() is not None or time.time() > deadline:
            sys.exit("server did not start")
        time.sleep(0.2)

q = call(conn(), "POST", "/v2/request-queues?name=rq-load")["data"]["id"]


def request(n):
    url = f"https://example.com/catalog/page-{n}?sort=price&view=grid&ref=bench"
    return {"url": url, "uniqueKey": url, "method": "GET",
            "userData": {"label": "LIST", "depth": n % 7, "seed": "troupe-bench"}}


batches = list(range(0, args.seed, 25))
lock = threading.Lock()


def seeder():
    c = conn()
    while True:
        with lock:
            if not batches:
                return
            first = batches.pop()
        body = json.dumps([request(n) for n in range(first, min(first + 25, args.seed))])
        call(c, "POST", f"/v2/request-queues/{q}/requests/batch", body)


ts = [threading.Thread(target=seeder) for _ in range(5)]
[t.start() for t in ts]
[t.join() for t in ts]

done = 0
errors = []


def consumer(i):
    global done
    c = conn()
    key = f"rq-load-{i}"
    rng = random.Random(i + 17)
    while True:
        with lock:
            if done >= args.ops or errors:
                return
        items = call(c, "POST", f"/v2/request-queues/{q}/head/lock?limit=25&lockSecs=60&clientKey={key}")["data"]["items"]
        if not items:
            if args.mode == "lockonly":
                errors.append("queue drained: seed more")
                return
            time.sleep(0.005)
            continue
        if args.mode == "lockonly":
            with lock:
                done += len(items)
            continue
        for item in items:
            rid = item["id"]
            if rng.randrange(20) == 0:
                call(c, "DELETE", f"/v2/request-queues/{q}/requests/{rid}/lock?clientKey={key}", ok=(204,))
            else:
                item.pop("lockExpiresAt", None)
                item["handledAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                call(c, "PUT", f"/v2/request-queues/{q}/requests/{rid}?clientKey={key}", json.dumps(item))
            with lock:
                done += 1


def cpu_seconds(pid):
    tot = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        tot += int(f[11]) + int(f[12])
    return tot / os.sysconf("SC_CLK_TCK")


pid = server.pid
if args.callgrind:
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, stdout=subprocess.DEVNULL)
perf = None
if args.perf:
    perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
cpu0, t0 = cpu_seconds(pid), time.time()
ts = [threading.Thread(target=consumer, args=(i,)) for i in range(args.clients)]
[t.start() for t in ts]
[t.join() for t in ts]
elapsed, cpu = time.time() - t0, cpu_seconds(pid) - cpu0
if perf:
    perf.send_signal(signal.SIGINT)
    perf.wait()
if args.callgrind:
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, stdout=subprocess.DEVNULL)
if errors:
    sys.exit(errors[0])
d = call(conn(), "GET", f"/v2/request-queues/{q}")["data"]
print(f"mode={args.mode} ops={done} elapsed={elapsed:.2f}s ops/s={done / elapsed:.0f} "
      f"server_cpu_per_op={cpu / done * 1e6:.1f}us total={d['totalRequestCount']} "
      f"handled={d['handledRequestCount']} pending={d['pendingRequestCount']}")
server.send_signal(signal.SIGTERM)
server.wait()
if not args.data_dir:
    shutil.rmtree(data_dir, ignore_errors=True)
