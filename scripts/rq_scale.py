#!/usr/bin/env python3
"""Request queues at scale: fills ONE queue through the HTTP API to millions of requests and
measures what happens (see docs/benchmarks.md, "Session 8: request queues at scale").

    python3 scripts/rq_scale.py [--bin target/release/troupe] [--n 2000000] [--conns 4]
                                [--data-dir DIR] [--keep] [--phases fill,restart,checks,second,delete]

fill:    POST /v2/request-queues/{id}/requests/batch, 25 new requests per call (as Crawlee does)
         over --conns keep-alive connections; per interval: requests/s, batch-add latency
         p50/p99/max, server RSS and CPU, DB/WAL sizes, and the server's merge/compaction log
         lines (RUST_LOG=troupe_storage=info).
restart: stop (SIGTERM) and start the server on the same data dir: time until it answers, time
         until the per-run filters are filled (log line), RSS after start-up.
checks:  dedup of old and new uniqueKeys (wasAlreadyPresent + the right id), GET of old ids,
         listings across runs (limit/exclusiveStartId), head and head/lock latency, handled PUTs,
         exact queue counters.
second:  a second queue's batch adds (latency) while the big queue merges/compacts (more adds).
delete:  DELETE of the big queue (time) while another queue's writes go on (their latency).
Standard library only. The server is pinned to nothing (the machine's cores are shared).
"""
import argparse, hashlib, base64, http.client, json, os, re, signal, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/troupe")
ap.add_argument("--n", type=int, default=2_000_000)
ap.add_argument("--conns", type=int, default=4)
ap.add_argument("--interval", type=float, default=5.0)
ap.add_argument("--data-dir")
ap.add_argument("--keep", action="store_true")
ap.add_argument("--phases", default="fill,restart,checks,second,delete")
ap.add_argument("--log", default="/tmp/rq_scale_server.log")
args = ap.parse_args()
phases = args.phases.split(",")

TOK = "scaletoken"
H = {"Authorization": f"Bearer {TOK}", "Content-Type": "application/json"}
data_dir = args.data_dir or tempfile.mkdtemp(prefix="rqscale")
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


class Server:
    def __init__(self):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); self.port = s.getsockname()[1]; s.close()
        env = dict(os.environ, TROUPE_TOKEN=TOK, RUST_LOG=os.environ.get("RUST_LOG", "troupe=info,troupe_storage=info,warn"))
        self.logf = open(args.log, "a")
        self.logpos = self.logf.tell()
        t = time.time()
        self.p = subprocess.Popen([args.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", data_dir],
                                  env=env, stdout=self.logf, stderr=self.logf)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                c.request("GET", "/v2/users/me", headers=H); c.getresponse().read(); break
            except OSError:
                if self.p.poll() is not None:
                    sys.exit("server exited")
                time.sleep(0.01)
        self.startup = time.time() - t
        self.cpu0 = self.cpu()

    def stat(self):
        rss = 0
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
        return rss

    def cpu(self):
        f = open(f"/proc/{self.p.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def new_log(self):
        """Server log lines written since the last call."""
        with open(args.log) as f:
            f.seek(self.logpos); text = f.read(); self.logpos = f.tell()
        return [l for l in text.splitlines() if l.strip()]

    def stop(self, sig=signal.SIGTERM):
        self.p.send_signal(sig); self.p.wait()


def conn(srv):
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)


def call(c, m, p, body=None):
    c.request(m, p, body=body, headers=H)
    r = c.getresponse(); data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{m} {p}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


def rqreq(n, tag="p"):
    u = f"https://example.com/catalog/{tag}/page-{n}?sort=price&view=grid&ref=scale"
    return {"url": u, "uniqueKey": u, "method": "GET", "userData": {"label": "LIST", "depth": n % 7}}


def request_id(unique_key):
    # Apify's request id: base64 of SHA-256 of the uniqueKey, [+/=] removed, first 15 chars.
    h = base64.b64encode(hashlib.sha256(unique_key.encode()).digest()).decode()
    return re.sub(r"[+/=]", "", h)[:15]


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def sizes():
    db = os.path.join(data_dir, "troupe.db")
    out = {}
    for suffix in ("", "-wal"):
        try:
            out[suffix or "db"] = os.path.getsize(db + suffix) / 1e6
        except OSError:
            out[suffix or "db"] = 0.0
    return out


def fill(srv, queue, start, n, tag="p", conns=None, label="fill"):
    """Adds n new requests (batches of 25) to `queue`; prints per-interval figures."""
    conns = conns or args.conns
    batches = n // 25
    lock = threading.Lock()
    lat = []
    done = [0]
    nxt = [0]
    stop = [False]

    def worker():
        c = conn(srv)
        while True:
            with lock:
                b = nxt[0]; nxt[0] += 1
            if b >= batches or stop[0]:
                return
            body = json.dumps([rqreq(start + b * 25 + k, tag) for k in range(25)]).encode()
            t = time.perf_counter()
            r = call(c, "POST", f"/v2/request-queues/{queue}/requests/batch", body)
            dt = time.perf_counter() - t
            assert len(r["data"]["processedRequests"]) == 25 and not r["data"]["unprocessedRequests"]
            with lock:
                lat.append(dt); done[0] += 1

    ts = [threading.Thread(target=worker) for _ in range(conns)]
    t0 = time.time(); [t.start() for t in ts]
    last_t, last_done, last_cpu = t0, 0, srv.cpu()
    rows = []
    while any(t.is_alive() for t in ts):
        time.sleep(min(args.interval, 0.5))
        now = time.time()
        if now - last_t < args.interval and any(t.is_alive() for t in ts):
            continue
        with lock:
            d = done[0]; window = lat[:]; lat.clear()
        cpu = srv.cpu(); sz = sizes()
        row = dict(t=now - t0, total=start + d * 25, rate=(d - last_done) * 25 / (now - last_t),
                   p50=pct(window, .5) * 1e3, p99=pct(window, .99) * 1e3, max=max(window, default=0) * 1e3,
                   rss=srv.stat(), cpu=(cpu - last_cpu) / (now - last_t) * 100, db=sz["db"], wal=sz["-wal"])
        rows.append(row)
        log(f"{label} {row['total']:>9} req  {row['rate']:7.0f}/s  batch p50 {row['p50']:6.1f} p99 {row['p99']:7.1f} max {row['max']:7.1f} ms"
            f"  rss {row['rss']:4d} MB  cpu {row['cpu']:3.0f}%  db {row['db']:6.0f} MB  wal {row['wal']:5.0f} MB")
        for l in srv.new_log():
            if "request ids" in l or "compact" in l or "merge" in l:
                log("   server:", re.sub(r"\x1b\[[0-9;]*m", "", l)[:240])
        last_t, last_done, last_cpu = now, d, cpu
    [t.join() for t in ts]
    el = time.time() - t0
    log(f"{label} done: {n} requests in {el:.1f}s = {n / el:.0f}/s")
    return rows


def main():
    srv = Server()
    log(f"server up in {srv.startup * 1e3:.0f} ms, data dir {data_dir}, rss {srv.stat()} MB")
    c = conn(srv)
    state_path = os.path.join(data_dir, "rq_scale.json")
    if os.path.exists(state_path):
        state = json.load(open(state_path))
    else:
        state = {"queue": call(c, "POST", "/v2/request-queues?name=big")["data"]["id"], "filled": 0}
    big = state["queue"]
    if "fill" in phases:
        fill(srv, big, state["filled"], args.n - state["filled"])
        state["filled"] = args.n
        json.dump(state, open(state_path, "w"))
        time.sleep(1)
        for l in srv.new_log():
            log("   server:", re.sub(r"\x1b\[[0-9;]*m", "", l)[:240])
        # Wait for background merges/compactions to finish (no log lines for a while).
    N = state["filled"]
    PKEYS[0] = state.get("pkeys", N)
    if "restart" in phases:
        srv.stop()
        srv = Server()
        log(f"restart: answers after {srv.startup * 1e3:.0f} ms, rss {srv.stat()} MB")
        t = time.time()
        while time.time() - t < 120:
            lines = srv.new_log()
            for l in lines:
                log("   server:", re.sub(r"\x1b\[[0-9;]*m", "", l)[:240])
            if any("filters" in l and "filled" in l for l in lines):
                break
            time.sleep(0.05)
        log(f"restart: rss {srv.stat()} MB after the filters")
        c = conn(srv)
    if "checks" in phases:
        invariants()
        c = conn(srv)  # (idle keep-alive connections are closed by the server)
        N = checks(srv, c, big, N)
        state["filled"] = N; state["pkeys"] = PKEYS[0]; json.dump(state, open(state_path, "w"))
    if "second" in phases:
        c = conn(srv)
        other = call(c, "POST", "/v2/request-queues")["data"]["id"]
        lat, finish = background_adds(srv, other, "second", 0.002)
        extra = int(os.environ.get("SECOND_N", "800000"))
        fill(srv, big, PKEYS[0], extra, label="fill+second")
        PKEYS[0] += extra; N += extra; state["filled"] = N; state["pkeys"] = PKEYS[0]; json.dump(state, open(state_path, "w"))
        # Keep the second writer going until background work is over (quiet log for 3 s).
        wait_quiet_log(srv)
        finish()
        log(f"second queue: {len(lat)} batches, p50 {pct(lat, .5) * 1e3:.1f} p99 {pct(lat, .99) * 1e3:.1f} max {max(lat) * 1e3:.1f} ms")
    if "crash" in phases:
        # kill -9 in the middle of a compaction (adds go on), restart, check everything.
        c = conn(srv)
        stop = [False]

        def watch():
            while not stop[0]:
                for l in srv.new_log():
                    if "compacting runs of request ids" in l:
                        time.sleep(float(os.environ.get("CRASH_AFTER", "0.25")))
                        log("kill -9 during:", re.sub(r"\x1b\[[0-9;]*m", "", l)[-80:])
                        srv.stop(signal.SIGKILL); stop[0] = True
                        return
                time.sleep(0.01)
        th = threading.Thread(target=watch); th.start()
        try:
            fill(srv, big, PKEYS[0], 1_000_000, label="fill+crash")
        except Exception as e:
            log(f"adds failed at the crash (expected): {type(e).__name__}")
        stop[0] = True; th.join()
        srv = Server()
        log(f"restart after kill -9: answers after {srv.startup * 1e3:.0f} ms")
        invariants()
        c = conn(srv)
        q = call(c, "GET", f"/v2/request-queues/{big}")["data"]
        # Acknowledged adds survived; the queue's counters match its rows.
        assert q["totalRequestCount"] >= N, q
        PKEYS[0] += q["totalRequestCount"] - N; N = q["totalRequestCount"]
        state["filled"] = N; state["pkeys"] = PKEYS[0]; json.dump(state, open(state_path, "w"))
        N = checks(srv, c, big, N)
        fill(srv, big, PKEYS[0], 800_000, label="fill after crash")
        PKEYS[0] += 800_000; N += 800_000
        state["filled"] = N; state["pkeys"] = PKEYS[0]; json.dump(state, open(state_path, "w"))
        time.sleep(3)
        for l in srv.new_log():
            log("   server:", re.sub(r"\x1b\[[0-9;]*m", "", l)[:240])
        invariants()
        c = conn(srv)
        N = checks(srv, c, big, N)
        state["filled"] = N; json.dump(state, open(state_path, "w"))
    if "delete" in phases:
        c = conn(srv)
        small = call(c, "POST", "/v2/request-queues")["data"]["id"]
        for b in range(40):
            call(c, "POST", f"/v2/request-queues/{small}/requests/batch", json.dumps([rqreq(b * 25 + k, "small") for k in range(25)]).encode())
        _, ms = timed(lambda: call(c, "DELETE", f"/v2/request-queues/{small}"))
        log(f"delete of a 1000-request queue beside the big one: {ms:.1f} ms")
        other = call(c, "POST", "/v2/request-queues")["data"]["id"]
        lat, finish = background_adds(srv, other, "del", 0.005)
        time.sleep(1)
        t = time.perf_counter()
        c.request("DELETE", f"/v2/request-queues/{big}", headers=H); r = c.getresponse(); r.read()
        dt = time.perf_counter() - t
        assert r.status == 204, r.status
        c.request("GET", f"/v2/request-queues/{big}", headers=H); r = c.getresponse(); r.read()
        assert r.status == 404, r.status
        time.sleep(1)
        # Background cleanup (if any) still going: watch the log for a while.
        wait_quiet_log(srv)
        finish()
        log(f"delete of the {N}-request queue: {dt * 1e3:.0f} ms; other queue's batch adds meanwhile: "
            f"{len(lat)}, p50 {pct(lat, .5) * 1e3:.1f} p99 {pct(lat, .99) * 1e3:.1f} max {max(lat) * 1e3:.1f} ms; "
            f"db {sizes()['db']:.0f} MB wal {sizes()['-wal']:.0f} MB rss {srv.stat()} MB")
        state["filled"] = 0
        os.remove(state_path)
    srv.stop()
    log(f"server log: {args.log}")
    if not args.keep and not args.data_dir:
        subprocess.run(["rm", "-rf", data_dir])


def background_adds(srv, queue, tag, pause):
    """Adds batches of 25 to `queue` on a connection of its own until `finish()` is called;
    returns (latencies in seconds, finish)."""
    lat, stop = [], [False]

    def writer():
        cc = conn(srv); i = 0
        while not stop[0]:
            body = json.dumps([rqreq(i * 25 + k, tag) for k in range(25)]).encode()
            t = time.perf_counter(); call(cc, "POST", f"/v2/request-queues/{queue}/requests/batch", body)
            lat.append(time.perf_counter() - t); i += 1
            time.sleep(pause)
    th = threading.Thread(target=writer); th.start()

    def finish():
        stop[0] = True; th.join()
    return lat, finish


def wait_quiet_log(srv, quiet_secs=3):
    """Relays the server's log until it has been quiet for `quiet_secs` (background work over)."""
    quiet = time.time()
    while time.time() - quiet < quiet_secs:
        time.sleep(0.5)
        lines = srv.new_log()
        for l in lines:
            log("   server:", re.sub(r"\x1b\[[0-9;]*m", "", l)[:240])
        if lines:
            quiet = time.time()


def invariants():
    """Each id in exactly one run; rq_runs' counts exact; every request found by id once."""
    import sqlite3
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'troupe.db')}?mode=ro", uri=True)
    runs = dict(db.execute("SELECT run, ids FROM rq_runs"))
    counted = dict(db.execute("SELECT run, count(*) FROM rq_ids GROUP BY run"))
    dup = db.execute("SELECT count(*) FROM (SELECT queue, id FROM rq_ids GROUP BY queue, id HAVING count(*) > 1)").fetchone()[0]
    wm = db.execute("SELECT watermark FROM rq_merged").fetchone()[0]
    merged_rows = db.execute("SELECT count(*) FROM rq_requests WHERE rid <= ?", (wm,)).fetchone()[0]
    ids = db.execute("SELECT count(*) FROM rq_ids").fetchone()[0]
    joined = db.execute("SELECT count(*) FROM rq_ids i JOIN rq_requests r ON r.rid = i.rid AND r.queue = i.queue AND r.id = i.id").fetchone()[0]
    counts = db.execute("SELECT sum(total_request_count) FROM storages WHERE kind = (SELECT kind FROM storages WHERE name = 'big')").fetchone()[0]
    rows = db.execute("SELECT count(*) FROM rq_requests").fetchone()[0]
    log(f"invariants: runs {sorted(runs.items())}; duplicates {dup}; rq_ids {ids} = merged rows {merged_rows} = joined {joined}; "
        f"rows {rows} = counters {counts}")
    assert {r: n for r, n in runs.items() if n} == {r: n for r, n in counted.items()}, (runs, counted)
    assert dup == 0 and ids == merged_rows == joined and rows == counts
    db.close()


def state_pkeys(n):
    # uniqueKeys "p/page-0" .. of the fills; `checks` adds ~500 "new" ones on top of them.
    return PKEYS[0] or n


PKEYS = [0]


def timed(f, n=1):
    t = time.perf_counter(); r = f(); return r, (time.perf_counter() - t) * 1e3


def checks(srv, c, big, N):
    import random
    rnd = random.Random(7)
    # Counters.
    q, ms = timed(lambda: call(c, "GET", f"/v2/request-queues/{big}")["data"])
    log(f"queue GET {ms:.1f} ms: total {q['totalRequestCount']} handled {q['handledRequestCount']} pending {q['pendingRequestCount']}")
    assert q["totalRequestCount"] == N and q["pendingRequestCount"] == N - q["handledRequestCount"], q
    handled0 = q["handledRequestCount"]
    # Dedup: 2,000 old uniqueKeys spread over all runs, in batches of 25 with 5 new ones each.
    lat = []
    olds = rnd.sample(range(state_pkeys(N)), 2000)
    news = 0
    for b in range(0, len(olds), 20):
        batch = [rqreq(n) for n in olds[b:b + 20]] + [rqreq(N + 10_000_000 + b + k, "new") for k in range(5)]
        r, ms = timed(lambda: call(c, "POST", f"/v2/request-queues/{big}/requests/batch", json.dumps(batch).encode())["data"])
        lat.append(ms)
        by_key = {p["uniqueKey"]: p for p in r["processedRequests"]}
        for x in batch[:20]:
            p = by_key[x["uniqueKey"]]
            assert p["wasAlreadyPresent"] and p["requestId"] == request_id(x["uniqueKey"]), p
        for x in batch[20:]:
            p = by_key[x["uniqueKey"]]
            assert not p["wasAlreadyPresent"] and p["requestId"] == request_id(x["uniqueKey"]), p
            news += 1
    log(f"dedup: 2000 old keys present with the right ids, {news} new added; batch p50 {pct(lat, .5):.1f} p99 {pct(lat, .99):.1f} max {max(lat):.1f} ms")
    # GET of old ids.
    lat = []
    for n in rnd.sample(range(state_pkeys(N)), 1000):
        key = rqreq(n)["uniqueKey"]
        r, ms = timed(lambda: call(c, "GET", f"/v2/request-queues/{big}/requests/{request_id(key)}")["data"])
        assert r["uniqueKey"] == key, r
        lat.append(ms)
    log(f"GET request (1000 old ids): p50 {pct(lat, .5):.2f} p99 {pct(lat, .99):.2f} max {max(lat):.1f} ms")
    # Listings across runs: 40 pages of 1000 in id order, checked sorted and unique.
    lat = []; seen = set(); last = None; start = None
    for _ in range(40):
        path = f"/v2/request-queues/{big}/requests?limit=1000" + (f"&exclusiveStartId={start}" if start else "")
        r, ms = timed(lambda: call(c, "GET", path)["data"])
        lat.append(ms)
        ids = [x["id"] for x in r["items"]]
        assert len(ids) == 1000 and ids == sorted(ids) and (last is None or ids[0] > last), (len(ids), last, ids[:3])
        assert not seen & set(ids)
        seen |= set(ids); last = ids[-1]; start = last
    log(f"listing: 40 pages of 1000 in id order (sorted, unique, contiguous): p50 {pct(lat, .5):.1f} p99 {pct(lat, .99):.1f} max {max(lat):.1f} ms")
    # Head, head/lock, handled PUTs.
    lat = []
    for _ in range(100):
        _, ms = timed(lambda: call(c, "GET", f"/v2/request-queues/{big}/head?limit=100"))
        lat.append(ms)
    log(f"head limit=100: p50 {pct(lat, .5):.2f} p99 {pct(lat, .99):.2f} ms")
    lat_lock = []; lat_put = []; handled = 0
    for _ in range(120):
        r, ms = timed(lambda: call(c, "POST", f"/v2/request-queues/{big}/head/lock?lockSecs=60&limit=25")["data"])
        lat_lock.append(ms)
        for it in r["items"]:
            body = json.dumps({"id": it["id"], "uniqueKey": it["uniqueKey"], "url": it["url"], "method": it.get("method", "GET"),
                               "handledAt": "2026-11-29T00:00:00.000Z"}).encode()
            _, ms = timed(lambda: call(c, "PUT", f"/v2/request-queues/{big}/requests/{it['id']}", body))
            lat_put.append(ms); handled += 1
    log(f"head/lock limit=25 ({len(lat_lock)}): p50 {pct(lat_lock, .5):.2f} p99 {pct(lat_lock, .99):.2f} ms; "
        f"handled PUTs ({handled}): p50 {pct(lat_put, .5):.2f} p99 {pct(lat_put, .99):.2f} max {max(lat_put):.1f} ms")
    q = call(c, "GET", f"/v2/request-queues/{big}")["data"]
    total = N + news
    assert q["totalRequestCount"] == total and q["handledRequestCount"] == handled0 + handled \
        and q["pendingRequestCount"] == total - handled0 - handled, (q, total, handled)
    log(f"counters exact: total {q['totalRequestCount']} handled {q['handledRequestCount']} pending {q['pendingRequestCount']}")
    # Dedup of handled ones answers wasAlreadyHandled.
    return total


if __name__ == "__main__":
    main()
