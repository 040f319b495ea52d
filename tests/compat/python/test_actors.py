"""Actors, builds and runs driven by the official Python apify-client: real Actors on the Apify
SDK for Python and JavaScript and a Crawlee crawler, built and run by troupe, checked from outside.

Builds install real packages (apify==4.1.0, apify 3.7.2, crawlee); pip's and npm's caches are
shared by every test through TROUPE_CACHE_DIR (target/troupe-test-cache), so only the first run
downloads anything. Each Actor is built once per module.
"""

import base64
import http.server
import os
import threading
import time
from datetime import timedelta

import pytest
from apify_client.errors import ApifyApiError

from conftest import ROOT, Gate, Server, create_and_build, finished, shell_actor, unique, wait_for_log

ACTORS = os.path.join(ROOT, "tests", "actors")
CACHE = os.path.join(ROOT, "target", "troupe-test-cache")
SKIP_DIRS = {"node_modules", ".venv", "__pycache__", "storage"}


def source_files(folder):
    """The project's files as a SOURCE_FILES version (TEXT when UTF-8, BASE64 otherwise)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            data = open(path, "rb").read()
            try:
                files.append({"name": rel, "format": "TEXT", "content": data.decode("utf-8")})
            except UnicodeDecodeError:
                files.append({"name": rel, "format": "BASE64", "content": base64.b64encode(data).decode()})
    return files


def build_project(client, folder, memory=1024):
    """Creates and builds an Actor from the project in `folder`."""
    return create_and_build(client, source_files(folder), name=os.path.basename(folder), memory=memory,
                            default_run_timeout=timedelta(seconds=600))


@pytest.fixture(scope="module")
def server():
    os.makedirs(CACHE, exist_ok=True)
    s = Server(extra_env={"TROUPE_CACHE_DIR": CACHE})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def python_actor(client):
    return build_project(client, os.path.join(ACTORS, "python-sdk"))


@pytest.fixture(scope="module")
def node_actor(client):
    return build_project(client, os.path.join(ACTORS, "node-sdk"))


def check_sdk_run(client, run, named_dataset, count):
    log = client.run(run.id).log().get()
    assert run.status == "SUCCEEDED", log
    assert run.exit_code == 0
    items = client.dataset(run.default_dataset_id).list_items().items
    assert items == [{"i": i, "greeting": "hello"} for i in range(count)]
    output = client.key_value_store(run.default_key_value_store_id).get_record("OUTPUT")
    assert output["value"]["ok"] is True and output["value"]["atHome"] is True
    assert output["value"]["input"] == {"count": count, "greeting": "hello"}
    assert output["value"]["runId"] == run.id
    assert output["value"]["handled"] == 3
    named = client.datasets().get_or_create(name=named_dataset)
    assert {"named": True} in client.dataset(named.id).list_items().items
    queue = client.request_queue(run.default_request_queue_id).get()
    assert (queue.total_request_count, queue.handled_request_count) == (3, 3)
    assert run.status_message == f"Done: {count} items"
    assert run.is_status_message_terminal is True
    # Every log line starts with an ISO timestamp with milliseconds.
    for line in log.splitlines():
        assert len(line) > 24 and line[23] == "Z" and line[19] == ".", line


def test_python_sdk_actor(client, python_actor):
    run = client.actor(python_actor.id).call(run_input={"count": 4, "greeting": "hello"}, logger=None)
    run = client.run(run.id).get()
    check_sdk_run(client, run, "troupe-py-named", 4)


def test_node_sdk_actor(client, node_actor):
    run = client.actor(node_actor.id).call(run_input={"count": 2, "greeting": "hello"}, logger=None)
    run = client.run(run.id).get()
    check_sdk_run(client, run, "troupe-js-named", 2)


def test_python_sdk_failure_sets_exit_code(client, python_actor):
    run = client.actor(python_actor.id).call(run_input={"count": 1, "greeting": "hello", "fail": True}, logger=None)
    assert run.status == "FAILED"
    assert run.exit_code == 7
    assert client.run(run.id).get().status_message == "Failed on purpose"


class _Site(http.server.BaseHTTPRequestHandler):
    PAGES = {
        "/": ("Home", ["/a", "/b"]),
        "/a": ("Page A", ["/c", "/"]),
        "/b": ("Page B", ["/c"]),
        "/c": ("Page C", ["/"]),
    }

    def do_GET(self):  # noqa: N802
        page = self.PAGES.get(self.path)
        if page is None:
            self.send_response(404)
            self.end_headers()
            return
        title, links = page
        body = f"<html><head><title>{title}</title></head><body>"
        body += "".join(f'<a href="{link}">{link}</a>' for link in links) + "</body></html>"
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_crawlee_crawler(client):
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        actor = build_project(client, os.path.join(ACTORS, "crawlee"))
        start_url = f"http://127.0.0.1:{site.server_address[1]}/"
        run = client.actor(actor.id).call(run_input={"startUrl": start_url}, logger=None)
        log = client.run(run.id).log().get()
        assert run.status == "SUCCEEDED", log
        items = client.dataset(run.default_dataset_id).list_items().items
        assert sorted(i["title"] for i in items) == ["Home", "Page A", "Page B", "Page C"], log
        queue = client.request_queue(run.default_request_queue_id).get()
        assert queue.handled_request_count == 4
    finally:
        site.shutdown()


def test_start_wait_abort_log_through_client(client):
    actor = shell_actor(client, "echo started; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done")
    run = client.actor(actor.id).start(memory_mbytes=128)
    assert run.status in ("READY", "RUNNING")
    assert run.meta.origin == "API" and run.options.disk_mbytes == 256
    wait_for_log(client, run.id, "tick 1")
    # wait_for_finish with a short wait returns the run still going (it never ends by itself).
    waited = client.run(run.id).wait_for_finish(wait_duration=timedelta(seconds=1))
    assert waited.status == "RUNNING"
    aborted = client.run(run.id).abort()
    assert aborted.status in ("ABORTING", "ABORTED")
    done = finished(client, run)
    assert done.status == "ABORTED"
    log = client.run(run.id).log().get()
    assert "started" in log and "tick 1" in log
    # The last run, by status, through both the actor client and the run listing.
    assert client.actor(actor.id).last_run(status="ABORTED").get().id == run.id
    assert client.actor(actor.id).runs().list().items[0].id == run.id
    assert client.runs().list(status="ABORTED").total >= 1


def test_resurrect_and_run_sync_through_http(client, server):
    import urllib.request

    actor = shell_actor(client, "echo once; exit 0")
    run = client.actor(actor.id).call(logger=None)
    assert run.status == "SUCCEEDED"
    client.run(run.id).resurrect()
    again = finished(client, run)
    assert again.status == "SUCCEEDED" and again.id == run.id
    assert client.run(run.id).log().get().count("once") == 2
    # Builds and Actor objects validate strictly.
    assert client.actor(actor.id).get().versions[0].version_number == "0.1"
    builds = client.actor(actor.id).builds().list()
    assert builds.total == 1 and builds.items[0].build_number == "0.1.1"


def test_bad_input_through_client(client):
    with pytest.raises(ApifyApiError) as err:
        client.actors().create(
            name=unique("bad"),
            versions=[{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
                       "sourceFiles": [{"name": "../escape", "format": "TEXT", "content": "x"}]}],
        )
    assert err.value.status_code == 400 and err.value.type == "invalid-input"
    assert client.actor("no-such-actor").get() is None
    actor = shell_actor(client, "exit 0")
    with pytest.raises(ApifyApiError) as err:
        client.actor(actor.id).start(build="9.9.9")
    assert err.value.type == "unknown-build-tag"
    with pytest.raises(ApifyApiError) as err:
        client.actor(actor.id).start(memory_mbytes=200)
    assert err.value.status_code == 400
    assert client.actor(actor.id).runs().list().total == 0


def test_graceful_abort_reaches_the_sdk(client, node_actor):
    """`aborting` goes over the events websocket; the JS SDK exits on it, long before the 30 s kill."""
    run = client.actor(node_actor.id).start(run_input={"sleepSecs": 120})
    deadline = time.time() + 60
    while "sleeping" not in (client.run(run.id).log().get() or ""):
        assert time.time() < deadline, client.run(run.id).log().get()
        time.sleep(0.2)
    time.sleep(1)
    started = time.time()
    client.run(run.id).abort(gracefully=True)
    done = finished(client, run)
    assert done.status == "ABORTED"
    assert time.time() - started < 25, client.run(run.id).log().get()


def test_events_websocket_sends_system_info(client, server):
    """The socket behind ACTOR_EVENTS_WEBSOCKET_URL: systemInfo with all eight fields the Python
    SDK requires, about once a second; only the run's owner may listen."""
    import asyncio
    import json

    import websockets

    # The run goes on until the gate opens: surely still running while the socket is read.
    gate = Gate()
    actor = shell_actor(client, gate.wait())
    run = client.actor(actor.id).start(memory_mbytes=128)
    url = server.origin.replace("http://", "ws://") + f"/v2/actor-runs/{run.id}/events-websocket?token={server.token}"

    async def first_system_info():
        async with websockets.connect(url) as socket:
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
                if message["name"] == "systemInfo":
                    return message["data"]

    data = asyncio.run(first_system_info())
    for field in ("memAvgBytes", "memCurrentBytes", "memMaxBytes", "cpuAvgUsage", "cpuMaxUsage",
                  "cpuCurrentUsage", "isCpuOverloaded", "createdAt"):
        assert field in data, data
    assert data["createdAt"].endswith("Z")
    anonymous = server.origin.replace("http://", "ws://") + f"/v2/actor-runs/{run.id}/events-websocket"

    async def refused():
        try:
            async with websockets.connect(anonymous):
                return False
        except websockets.exceptions.InvalidStatus as err:
            return err.response.status_code == 401

    assert asyncio.run(refused())
    gate.open()
    assert finished(client, run).status == "SUCCEEDED"
    gate.close()
