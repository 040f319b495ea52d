#!/usr/bin/env python3
"""API coverage audit: calls every operation listed in ENDPOINTS.md against a running troupe
and flags the ones troupe does not route (404 page-not-found, 405 method-not-allowed) or answers
with 501 / not-implemented. Missing resources (404 record-not-found) and bad input (400) count as
routed: the point is which operations exist, not what they return for placeholder ids.

Usage: scripts/coverage.py [--endpoints FILE] [--bin target/release/troupe] [--url http://HOST:PORT --token T]
Without --url it starts the binary on a random port with a temporary data dir.
Exit status 1 when any P0/P1 operation is missing.
"""
import argparse, json, os, re, socket, subprocess, sys, tempfile, time, urllib.request, urllib.error

ROW = re.compile(r"^\|\s*(GET|POST|PUT|DELETE|HEAD)\s*\|\s*`([^`]+)`\s*\|.*\|\s*(P[012])\s*\|\s*$")


def operations(path):
    ops = []
    with open(path) as f:
        for line in f:
            m = ROW.match(line.strip())
            if m:
                ops.append((m.group(1), m.group(2), m.group(3)))
    return ops


def concrete(path):
    # Placeholders: ids that do not exist (record-not-found is fine), a version and key that parse.
    return (path.replace("{versionNumber}", "0.0").replace("{envVarName}", "MY_VAR")
            .replace("{recordKey}", "some-key").replace("{", "").replace("}", ""))


def call(base, token, method, path):
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(f"{base}{concrete(path)}{sep}token={token}", method=method)
    if method in ("POST", "PUT"):
        req.data = b"{}"
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def error_type(body):
    try:
        return json.loads(body)["error"]["type"]
    except Exception:
        return None


def start(binary):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    data = tempfile.mkdtemp()
    token = "coverage-token-0123456789"
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            env={**os.environ, "TROUPE_TOKEN": token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/v2/users/me?token={token}", timeout=2)
            return proc, base, token
        except Exception:
            time.sleep(0.1)
    proc.kill()
    sys.exit("server did not start")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", default="/work/shared/apify-api/ENDPOINTS.md")
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "release", "troupe"))
    ap.add_argument("--url"); ap.add_argument("--token")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    proc = None
    if a.url:
        base, token = a.url.rstrip("/"), a.token
    else:
        proc, base, token = start(a.bin)
    missing = []
    try:
        ops = operations(a.endpoints)
        for method, path, prio in ops:
            status, body = call(base, token, method, path)
            etype = error_type(body)
            gap = (status == 405 or status == 501 or etype in ("page-not-found", "method-not-allowed", "not-implemented"))
            if gap:
                missing.append((prio, method, path, status, etype))
            if a.verbose or gap:
                print(f"{'MISSING' if gap else 'ok     '} {prio} {method:6} {path} -> {status} {etype or ''}")
    finally:
        if proc:
            proc.terminate(); proc.wait()
    print(f"{len(ops)} operations, {len(missing)} not answered "
          f"(P0 {sum(m[0]=='P0' for m in missing)}, P1 {sum(m[0]=='P1' for m in missing)}, P2 {sum(m[0]=='P2' for m in missing)})")
    sys.exit(1 if any(m[0] in ("P0", "P1") for m in missing) else 0)


if __name__ == "__main__":
    main()
