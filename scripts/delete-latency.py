#!/usr/bin/env python3
"""Write latency while a large storage is deleted (docs/benchmarks.md, session 10).

    OLD_BIN=... NEW_BIN=... python3 scripts/delete-latency.py ITEMS ROUNDS [extra args of NEW_BIN]
    KIND=request-queues SEED=DIR ...   # a queue: SEED from rq_scale.py --phases fill --data-dir DIR

Seeds a dataset of ITEMS items once with OLD_BIN (or uses SEED), then ROUNDS times old, new: copies
the seed, starts the binary, pushes one item at a time to another dataset from one client (back to
back), DELETEs the largest storage of KIND after 3 s and keeps pushing until its content is gone
(the purge row is gone, or the DELETE returned for the old binary) + 1 s. Prints the DELETE's
latency, the purge's duration, server CPU in that window, the WAL size, and push latency
p50/p99/max before and during. Standard library only."""
import http.client, json, os, re, shutil, sqlite3, subprocess, sys, threading, time

TOKEN = "bench-token-0123456789"

def start(bin_, data_dir, extra=()):
    proc = subprocess.Popen([bin_, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, *extra],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, TROUPE_TOKEN=TOKEN, RUST_LOG="warn"))
    for line in proc.stdout:
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, host, int(port)
    raise SystemExit("no address")

class Conn:
    def __init__(self, host, port):
        self.c = http.client.HTTPConnection(host, port, timeout=3600)
    def req(self, method, path, body=None):
        h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, data

def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

def seed(bin_, seed_dir, items):
    if os.path.exists(os.path.join(seed_dir, "done")):
        return
    shutil.rmtree(seed_dir, ignore_errors=True)
    os.makedirs(seed_dir)
    proc, host, port = start(bin_, seed_dir)
    c = Conn(host, port)
    st, body = c.req("POST", "/v2/datasets?name=big")
    ds = json.loads(body)["data"]["id"]
    c.req("POST", "/v2/datasets?name=probe")
    pad = "lorem ipsum dolor sit amet " * 6
    t = time.time()
    for start_ in range(0, items, 10000):
        batch = [{"id": n, "url": f"https://example.com/product/{n}", "title": f"Product {n}",
                  "price": n * 0.01, "tags": ["a", "b"], "meta": {"seen": True, "rank": n % 97}, "text": pad}
                 for n in range(start_, min(start_ + 10000, items))]
        st, body = c.req("POST", f"/v2/datasets/{ds}/items", json.dumps(batch).encode())
        assert st == 201, body
    print(f"seeded {items} items in {time.time() - t:.0f}s", flush=True)
    proc.terminate(); proc.wait()
    open(os.path.join(seed_dir, "done"), "w").close()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

def run(label, bin_, seed_dir, work, extra=()):
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(seed_dir, work)
    proc, host, port = start(bin_, work, extra)
    c = Conn(host, port)
    kind = os.environ.get("KIND", "datasets")
    db0 = sqlite3.connect(f"file:{work}/troupe.db?mode=ro", uri=True)
    code = {"datasets": 1, "request-queues": 3}[kind]
    big = db0.execute("SELECT id FROM storages WHERE kind = ? ORDER BY item_count + total_request_count DESC LIMIT 1", (code,)).fetchone()[0]
    db0.close()
    st, _ = c.req("POST", "/v2/datasets?name=probe")
    lat = []  # (t_start, ms)
    stop = threading.Event()
    def probe():
        pc = Conn(host, port)
        body = json.dumps({"x": 1}).encode()
        while not stop.is_set():
            t = time.time()
            st, _ = pc.req("POST", "/v2/datasets/~probe/items", body)
            assert st == 201
            lat.append((t, (time.time() - t) * 1000))
    th = threading.Thread(target=probe); th.start()
    time.sleep(3)
    c0 = cpu(proc.pid)
    t_del = time.time()
    st, _ = Conn(host, port).req("DELETE", f"/v2/{kind}/{big}")
    del_ms = (time.time() - t_del) * 1000
    assert st == 204, st
    db = sqlite3.connect(f"file:{work}/troupe.db?mode=ro", uri=True)
    while True:
        try:
            n = db.execute("SELECT count(*) FROM storage_purges").fetchone()[0]
        except sqlite3.OperationalError:
            n = 0  # old schema: deleted synchronously
        if n == 0:
            break
        time.sleep(0.05)
    t_done = time.time()
    c1 = cpu(proc.pid)
    wal = os.path.getsize(f"{work}/troupe.db-wal") / 2**20 if os.path.exists(f"{work}/troupe.db-wal") else 0
    time.sleep(1)
    stop.set(); th.join()
    proc.terminate(); proc.wait()
    before = [ms for t, ms in lat if t + ms / 1000 < t_del]
    during = [ms for t, ms in lat if t + ms / 1000 >= t_del and t <= t_done]
    print(f"{label}: WAL {wal:.0f} MiB; delete {del_ms:.0f} ms, content gone after {(t_done - t_del):.2f} s, server CPU in that window {c1 - c0:.2f} s; "
          f"probe pushes before: n={len(before)} p50 {pct(before, .5):.2f} p99 {pct(before, .99):.2f} max {max(before):.1f} ms; "
          f"during: n={len(during)} p50 {pct(during, .5):.2f} p99 {pct(during, .99):.2f} max {max(during) if during else float('nan'):.1f} ms",
          flush=True)
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    items = int(sys.argv[1]); rounds = int(sys.argv[2])
    extra_after = sys.argv[3:]
    seed_dir = os.environ.get("SEED") or f"/tmp/delete-latency-seed-{items}"
    if not os.environ.get("SEED"): seed(os.environ["OLD_BIN"], seed_dir, items)
    for r in range(rounds):
        if not os.environ.get("SKIP_BEFORE"): run("before", os.environ["OLD_BIN"], seed_dir, os.environ.get("WORK", "/tmp/delete-latency-work"))
        run("after ", os.environ.get("NEW_BIN", "target/release/troupe"), seed_dir, os.environ.get("WORK", "/tmp/delete-latency-work"), extra_after)
