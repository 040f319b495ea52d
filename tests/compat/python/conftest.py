"""Fixtures: a real troupe server (binary from $TROUPE_BIN) and official clients pointed at it."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest
from apify_client import ApifyClient, ApifyClientAsync

TOKEN = "compat-token-0123456789"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def troupe_bin():
    return os.environ.get("TROUPE_BIN") or os.path.join(ROOT, "target", "release", "troupe")


class Server:
    def __init__(self, extra_env=None, data_dir=None):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="troupe-compat-")
        env = dict(os.environ, TROUPE_TOKEN=TOKEN, RUST_LOG="warn")
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [troupe_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.origin = None
        for line in self.proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.origin = m.group(1)
                break
        assert self.origin, "troupe did not report its address"
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.token = TOKEN
        self.api = self.origin + "/v2"

    def client(self):
        return ApifyClient(self.token, api_url=self.origin)

    def async_client(self):
        return ApifyClientAsync(self.token, api_url=self.origin)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture()
def client(server):
    return server.client()
