#!/usr/bin/env python3
"""Manual scale check of dataset exports (issue 2, item 7). Not part of CI.

Starts troupe (default: target/release/troupe) on a fresh data dir, pushes N items of about
300 bytes, then exports the whole dataset in every format and reports the server's peak RSS
(VmHWM, reset before each export through /proc/PID/clear_refs) and the time of each export; also
times reading the first and the last 1,000 items.

    python3 scripts/dataset-scale.py [--items 1000000] [--bin target/release/troupe]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

TOKEN = "scale-token-0123456789"


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024  # MiB
    return -1


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def request(host, port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=3600)
    h = {"Authorization": f"Bearer {TOKEN}"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    total = 0
    while True:
        chunk = resp.read(1 << 16)
        if not chunk:
            break
        total += len(chunk)
        if method != "GET" or total < (1 << 20):
            last = chunk
    conn.close()
    return resp, total, (last if total else b"")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/troupe")
    ap.add_argument("--formats", default="json,jsonl,csv,html,xml,rss,xlsx")
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="troupe-scale-")
    proc = subprocess.Popen(
        [args.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, TROUPE_TOKEN=TOKEN, RUST_LOG="warn"),
    )
    try:
        origin = None
        for line in proc.stdout:
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                origin = m.group(1)
                break
        host, port = origin.rsplit(":", 1)
        port = int(port)
        resp, _, body = request(host, port, "POST", "/v2/datasets?name=scale")
        ds = json.loads(body)["data"]["id"]

        t0 = time.time()
        batch = 10_000
        pad = "lorem ipsum dolor sit amet " * 6
        for start in range(0, args.items, batch):
            items = [
                {"id": n, "url": f"https://example.com/product/{n}", "title": f"Product {n}",
                 "price": n * 0.01, "tags": ["a", "b"], "meta": {"seen": True, "rank": n % 97}, "text": pad}
                for n in range(start, min(start + batch, args.items))
            ]
            payload = json.dumps(items).encode()
            resp, _, body = request(host, port, "POST", f"/v2/datasets/{ds}/items", payload,
                                    {"Content-Type": "application/json"})
            assert resp.status == 201, body
        push_secs = time.time() - t0
        item_size = len(json.dumps(items[0]))
        print(f"pushed {args.items} items (~{item_size} B each) in {push_secs:.1f}s; "
              f"RSS now {vm(proc.pid, 'VmRSS')} MiB, peak {vm(proc.pid, 'VmHWM')} MiB; "
              f"db {os.path.getsize(os.path.join(data_dir, 'troupe.db')) // (1 << 20)} MiB")

        for label, query in [("first 1000", "offset=0&limit=1000"),
                             ("last 1000", f"offset={args.items - 1000}&limit=1000"),
                             ("last 1000 desc", "offset=0&limit=1000&desc=1"),
                             ("first 1000 desc", f"offset={args.items - 1000}&limit=1000&desc=1")]:
            times = []
            for _ in range(5):
                t = time.time()
                resp, size, _ = request(host, port, "GET", f"/v2/datasets/{ds}/items?{query}")
                times.append((time.time() - t) * 1000)
            print(f"read {label:16}: median {sorted(times)[2]:.1f} ms ({size} B)")

        can_reset = reset_peak(proc.pid)
        for fmt in args.formats.split(","):
            reset_peak(proc.pid)
            t = time.time()
            resp, size, _ = request(host, port, "GET", f"/v2/datasets/{ds}/items?format={fmt}")
            secs = time.time() - t
            assert resp.status == 200, resp.status
            print(f"export {fmt:5}: {size / (1 << 20):8.1f} MiB in {secs:6.1f}s; "
                  f"peak RSS {'(since reset) ' if can_reset else '(since start) '}{vm(proc.pid, 'VmHWM')} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
