"""Fixtures: a real troupe server (binary from $TROUPE_BIN) and official clients pointed at it."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import timedelta

import pytest
from apify_client import ApifyClient, ApifyClientAsync

TOKEN = "compat-token-0123456789"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SHARED = os.path.join(ROOT, "tests", "compat", "shared")
FINISHED = ("SUCCEEDED", "FAILED", "TIMED-OUT", "ABORTED")
# How long a test waits for something that must happen before failing: generous, since CI
# machines may be slow and loaded; waiting ends as soon as the thing happens.
PATIENCE_SECS = 300


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
    # The build-source tests build from local git repositories (CI has no network).
    s = Server(extra_env={"TROUPE_ALLOW_LOCAL_SOURCES": "true"})
    yield s
    s.stop()


@pytest.fixture()
def client(server):
    return server.client()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def status_of(job):
    return job.status.value if hasattr(job.status, "value") else job.status


def shell_files(script):
    """The source files of an Actor whose program is `script` (run with /bin/sh)."""
    return [
        {"name": ".actor/actor.json", "format": "TEXT",
         "content": '{"actorSpecification": 1, "startCommand": "sh main.sh"}'},
        {"name": "main.sh", "format": "TEXT", "content": script},
    ]


def create_and_build(client, files, name="sh", memory=128, **options):
    """Creates an Actor from SOURCE_FILES and builds version 0.1, waiting however long the build
    takes; the build must succeed."""
    actor = client.actors().create(
        name=unique(name),
        versions=[{"versionNumber": "0.1", "sourceType": "SOURCE_FILES", "sourceFiles": files}],
        default_run_memory_mbytes=memory,
        **options,
    )
    build = client.actor(actor.id).build(version_number="0.1", wait_for_finish=60)
    build = client.build(build.id).wait_for_finish()
    assert status_of(build) == "SUCCEEDED", client.build(build.id).log().get()
    return actor


def shell_actor(client, script, name="sh", **options):
    return create_and_build(client, shell_files(script), name=name, **options)


def finished(client, run):
    """Waits until `run` ends (the client's wait_for_finish may return early); returns it."""
    deadline = time.time() + PATIENCE_SECS
    while True:
        run = client.run(run.id).wait_for_finish(wait_duration=timedelta(seconds=60))
        if status_of(run) in FINISHED:
            return run
        assert time.time() < deadline, f"run {run.id} did not finish"


def eventually(what, probe):
    """Polls `probe` until it returns something truthy; returns that."""
    deadline = time.time() + PATIENCE_SECS
    while True:
        value = probe()
        if value:
            return value
        assert time.time() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.1)


def wait_for_log(client, run_id, needle):
    return eventually(f"{needle!r} in the log of {run_id}",
                      lambda: (lambda log: log if needle in log else None)(client.run(run_id).log().get() or ""))


class Gate:
    """A file a test program waits for, so the test (not a sleep) decides when it goes on."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="troupe-gate-")
        self.path = os.path.join(self.dir, "open")

    def wait(self):
        """A shell command that returns once the gate is open."""
        return f"while [ ! -e '{self.path}' ]; do sleep 0.05; done"

    def open(self):
        open(self.path, "w").close()

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
