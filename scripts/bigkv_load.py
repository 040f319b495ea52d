#!/usr/bin/env python3
"""Large-body load (troupe-bench's kv_get_1m, kv_put_1m and log_get loops) for profiling and
A/B-ing server binaries (docs/benchmarks.md, "Session 11: large KV records and logs").

    python3 scripts/bigkv_load.py BIN [BIN2 ...] [--mode get|put|log] [--secs 4] [--rounds 3]
                                  [--clients 8] [--size 1048576] [--perf OUT] [--fsync]

For each round and each BIN in turn (interleaved): starts `BIN serve` on a fresh data dir
(pinned to CPU 0, this script to CPU 1 like the bench), seeds 20 records l0..l19 of --size bytes
(get, put) or runs a shell Actor that writes a ~12 MB log (log), then runs --clients
keep-alive connections for --secs seconds:

get: GET .../records/l{random}            (kv_get_1m, c=8)
put: PUT .../records/l{random} of --size  (kv_put_1m, c=4 in the bench: pass --clients 4)
log: GET /v2/logs/{runId}                  (log_get, c=8)

Prints per binary: ops/s, MiB/s and the server's CPU time per op (all of its threads, from
/proc/PID/stat utime+stime). With --perf OUT, `perf record -g` is attached to the server for the
load phase (one binary, one round). Standard library only.
"""
import argparse, http.client, json, os, random, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("bins", nargs="+")
ap.add_argument("--mode", choices=["get", "put", "log"], default="get")
ap.add_argument("--secs", type=float, default=4.0)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--size", type=int, default=1 << 20)
ap.add_argument("--perf", metavar="OUT")
ap.add_argument("--fsync", action="store_true")
args = ap.parse_args()

TOK = "bigkvloadtoken"
H = {"Authorization": f"Bearer {TOK}"}
TICK = os.sysconf("SC_CLK_TCK")
try:
    os.sched_setaffinity(0, {1})
except OSError:
    pass


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start(bin_path):
    data_dir = tempfile.mkdtemp(prefix="bigkv")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, TROUPE_TOKEN=TOK, RUST_LOG="warn")
    cmd = ["taskset", "-c", "0", bin_path, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
    if args.fsync:
        cmd.append("--fsync")
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(data_dir + ".log", "w"))
    deadline = time.time() + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v2/users/me", headers=H)
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.05)
    return server, port, data_dir


def call(c, method, path, body=None, ok=(200, 201), headers=None):
    h = dict(H, **(headers or {}))
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if r.status not in ok:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data and r.getheader("content-type", "").startswith("application/json") else data


def seed(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    if args.mode == "log":
        script = ("yes 'troupe-bench log line: the quick brown fox jumps over the lazy dog 0123456789'"
                  " | head -c 9500000\n")
        actor = {"name": "bigkv-log", "versions": [{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
                 "sourceFiles": [
                     {"name": ".actor/actor.json", "format": "TEXT",
                      "content": "{\"actorSpecification\":1,\"startCommand\":\"sh main.sh\"}"},
                     {"name": "main.sh", "format": "TEXT", "content": script}]}],
                 "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128}}
        a = call(c, "POST", "/v2/acts", json.dumps(actor), headers={"Content-Type": "application/json"})
        act = a["data"]["id"]
        call(c, "POST", f"/v2/acts/{act}/builds?version=0.1&waitForFinish=120")
        r = call(c, "POST", f"/v2/acts/{act}/runs?waitForFinish=120")
        run = r["data"]["id"]
        while r["data"]["status"] not in ("SUCCEEDED", "FAILED"):
            r = call(c, "GET", f"/v2/actor-runs/{run}?waitForFinish=60")
        return f"/v2/logs/{run}", None
    s = call(c, "POST", "/v2/key-value-stores?name=big", headers={"Content-Type": "application/json"})
    store = s["data"]["id"]
    for i in range(20):
        body = bytes([97 + i % 26]) * args.size
        call(c, "PUT", f"/v2/key-value-stores/{store}/records/l{i}", body,
             headers={"Content-Type": "application/octet-stream"})
    return f"/v2/key-value-stores/{store}/records/l", bytes([99]) * args.size


def load(port, path, body):
    stop = time.time() + args.secs
    counts, nbytes, errors = [0] * args.clients, [0] * args.clients, []

    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = random.Random(i)
        try:
            while time.time() < stop:
                if args.mode == "log":
                    c.request("GET", path, headers=H)
                elif args.mode == "get":
                    c.request("GET", f"{path}{rng.randrange(20)}", headers=H)
                else:
                    c.request("PUT", f"{path}{rng.randrange(20)}", body=body,
                              headers=dict(H, **{"Content-Type": "application/octet-stream"}))
                r = c.getresponse()
                data = r.read()
                if r.status not in (200, 201):
                    errors.append(r.status)
                    return
                counts[i] += 1
                nbytes[i] += len(data) if args.mode != "put" else len(body)
        except Exception as e:  # noqa
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), sum(nbytes), time.time() - t0, errors


results = {b: [] for b in args.bins}
for rnd in range(args.rounds):
    for b in args.bins:
        server, port, data_dir = start(b)
        try:
            path, body = seed(port)
            perf = None
            if args.perf:
                perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p", str(server.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            c0 = cpu_secs(server.pid)
            ops, nb, el, errors = load(port, path, body)
            c1 = cpu_secs(server.pid)
            if perf:
                perf.send_signal(2)
                perf.wait()
            mibs = nb / el / (1 << 20)
            cpu = (c1 - c0) / max(ops, 1) * 1e6
            results[b].append((mibs, cpu))
            print(f"[r{rnd}] {b}: {ops} ops {ops/el:.0f}/s {mibs:.0f} MiB/s server {cpu:.0f} us/op"
                  f" ({(c1-c0)/el*100:.0f}% CPU) errors {errors[:3]}", flush=True)
        finally:
            server.terminate()
            server.wait()
            subprocess.run(["rm", "-rf", data_dir, data_dir + ".log"])
for b, rs in results.items():
    ms = sorted(r[0] for r in rs); cs = sorted(r[1] for r in rs)
    print(f"{b}: median {ms[len(ms)//2]:.0f} MiB/s, {cs[len(cs)//2]:.0f} us/op (cpu {[round(c) for c in cs]})")
