"""Request queues through the official Python apify-client (strict pydantic models)."""

import base64
import hashlib
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apify_client.errors import ApifyApiError

from conftest import unique


def req(key):
    return {"url": f"https://example.com/{key}", "uniqueKey": key}


def new_queue(client, key=None):
    rq = client.request_queues().get_or_create(name=unique("py-rq"))
    return rq, client.request_queue(rq.id, client_key=key)


def test_every_request_operation(client):
    info, rq = new_queue(client, key="py-one")
    assert info.total_request_count == 0 and info.pending_request_count == 0
    assert client.request_queues().get_or_create(name=info.name).id == info.id

    added = rq.add_request({"url": "https://example.com", "uniqueKey": "https://example.com", "userData": {"label": "L"}})
    assert added.request_id == "EAaArVRs5qV39C9"
    assert added.was_already_present is False and added.was_already_handled is False
    again = rq.add_request({"url": "https://example.com", "uniqueKey": "https://example.com"})
    assert again.was_already_present is True

    # Batch with duplicates (inside the batch and already stored) and forefront.
    result = rq.batch_add_requests([req("a"), req("b"), req("a"), {"url": "https://example.com", "uniqueKey": "https://example.com"}])
    assert [p.was_already_present for p in result.processed_requests] == [False, False, True, True]
    assert result.unprocessed_requests == []
    front = rq.batch_add_requests([req("f1"), req("f2")], forefront=True)
    assert len(front.processed_requests) == 2
    head = rq.list_head(limit=10)
    assert [i.unique_key for i in head.items] == ["f2", "f1", "https://example.com", "a", "b"]
    assert head.had_multiple_clients is False
    assert head.queue_modified_at.tzinfo is not None

    # Get, mark handled the way the Python SDK does (datetime → str form), reclaim, upsert.
    stored = rq.get_request("EAaArVRs5qV39C9")
    assert stored.user_data is not None
    assert rq.get_request("nosuchrequest00") is None
    stored.handled_at = datetime(2026, 8, 21, 10, 23, 31, 607000, tzinfo=timezone.utc)
    upd = rq.update_request(stored)
    assert upd.was_already_present is True and upd.was_already_handled is False
    assert rq.get_request("EAaArVRs5qV39C9").handled_at == stored.handled_at
    q = client.request_queue(info.id).get()
    assert (q.total_request_count, q.handled_request_count, q.pending_request_count) == (5, 1, 4)
    a = rq.get_request(result.processed_requests[0].request_id)
    rq.update_request(a, forefront=True)
    assert rq.list_head(limit=1).items[0].unique_key == "a"
    upsert = rq.update_request({**req("u"), "id": _id("u")})
    assert upsert.was_already_present is False

    # Delete one and a batch (by id and by uniqueKey).
    rq.delete_request(_id("u"))
    deleted = rq.batch_delete_requests([{"uniqueKey": "f1"}, {"id": _id("f2")}])
    assert len(deleted.processed_requests) == 2 and deleted.unprocessed_requests == []
    q = client.request_queue(info.id).get()
    assert (q.total_request_count, q.handled_request_count, q.pending_request_count) == (3, 1, 2)
    assert q.had_multiple_clients is False
    client.request_queue(info.id).delete()
    assert client.request_queue(info.id).get() is None


def _id(key):
    digest = base64.b64encode(hashlib.sha256(key.encode()).digest()).decode()
    return digest.replace("+", "").replace("/", "").replace("=", "")[:15]


def test_list_requests_paging(client):
    info, rq = new_queue(client, key="py-lister")
    for chunk in range(3):
        rq.batch_add_requests([req(f"p{chunk * 25 + i}") for i in range(25)])
    page = rq.list_requests(limit=30)
    assert len(page.items) == 30 and page.limit == 30 and page.next_cursor
    second = rq.list_requests(limit=30, cursor=page.next_cursor)
    assert {i.id for i in page.items}.isdisjoint({i.id for i in second.items})
    everything = list(rq.iterate_requests(chunk_size=20))
    assert len(everything) == 75
    assert len({r.id for r in everything}) == 75
    assert sorted(r.id for r in everything) == [r.id for r in everything]
    assert {r.id for r in everything} == {_id(f"p{i}") for i in range(75)}
    pending = rq.list_requests(limit=10000, filter=["pending"])
    assert len(pending.items) == 75 and pending.next_cursor is None


def test_locks_across_two_client_keys(client):
    info, rq_a = new_queue(client, key="py-a")
    rq_b = client.request_queue(info.id, client_key="py-b")
    rq_a.batch_add_requests([req(f"r{i}") for i in range(6)])
    a = rq_a.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=2)
    b = rq_b.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=2)
    assert [i.unique_key for i in a.items] == ["r0", "r1"]
    assert [i.unique_key for i in b.items] == ["r2", "r3"]
    assert a.queue_has_locked_requests is True and a.client_key == "py-a" and a.lock_secs == 60
    assert b.had_multiple_clients is True
    assert a.items[0].lock_expires_at > datetime.now(timezone.utc)

    # Only the holder may prolong or delete a lock.
    with pytest.raises(ApifyApiError) as err:
        rq_b.prolong_request_lock(a.items[0].id, lock_duration=timedelta(seconds=30))
    assert err.value.type == "request-handled-or-locked"
    with pytest.raises(ApifyApiError):
        rq_b.delete_request_lock(a.items[0].id)
    prolonged = rq_a.prolong_request_lock(a.items[0].id, lock_duration=timedelta(seconds=120))
    assert prolonged.lock_expires_at > a.items[0].lock_expires_at
    rq_a.delete_request_lock(a.items[1].id, forefront=True)
    assert rq_a.list_head(limit=1).items[0].unique_key == "r1"

    assert rq_b.unlock_requests().unlocked_count == 2
    assert rq_b.unlock_requests().unlocked_count == 0
    c = rq_b.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=25)
    assert [i.unique_key for i in c.items] == ["r1", "r2", "r3", "r4", "r5"]
    locked = rq_a.list_requests(filter=["locked"])
    assert len(locked.items) == 6

    # Handling drops the lock; an empty lock call reports whether locks remain.
    for item in c.items:
        full = rq_b.get_request(item.id)
        full.handled_at = datetime.now(timezone.utc)
        rq_b.update_request(full)
    rest = rq_b.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=25)
    assert rest.items == [] and rest.queue_has_locked_requests is True
    full = rq_a.get_request(a.items[0].id)
    full.handled_at = datetime.now(timezone.utc)
    rq_a.update_request(full)
    done = rq_b.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=25)
    assert done.items == [] and done.queue_has_locked_requests is False
    q = client.request_queue(info.id).get()
    assert (q.total_request_count, q.handled_request_count, q.pending_request_count) == (6, 6, 0)


# --- Crawlee itself, as an Actor at home, against troupe ---------------------------------------

PAGES = 30


class _Site(BaseHTTPRequestHandler):
    """30 pages linking to each other (and to duplicates, and to the start page)."""

    def do_GET(self):  # noqa: N802
        m = re.fullmatch(r"/page/(\d+)", self.path)
        if not m or int(m.group(1)) >= PAGES:
            self.send_response(404)
            self.end_headers()
            return
        i = int(m.group(1))
        targets = {(i + 1) % PAGES, (i * 7 + 3) % PAGES, 0}
        links = "".join(f'<a href="/page/{t}">p{t}</a><a href="/page/{t}">again</a>' for t in sorted(targets))
        body = f"<html><head><title>Page {i}</title></head><body>{links}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def actor_env(server, client, tmp_path):
    """The environment of an Actor run (SDK-CONTRACT §1.4), with fresh default storages."""
    rq = client.request_queues().get_or_create()
    ds = client.datasets().get_or_create()
    kv = client.key_value_stores().get_or_create()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIFY_", "ACTOR_", "CRAWLEE_"))}
    env.update(
        APIFY_IS_AT_HOME="1",
        APIFY_TOKEN=server.token,
        APIFY_API_BASE_URL=server.origin,
        APIFY_API_PUBLIC_BASE_URL=server.origin,
        ACTOR_DEFAULT_REQUEST_QUEUE_ID=rq.id,
        ACTOR_DEFAULT_DATASET_ID=ds.id,
        ACTOR_DEFAULT_KEY_VALUE_STORE_ID=kv.id,
        ACTOR_RUN_ID="fakeRunId00000000",
        ACTOR_ID="fakeActorId000000",
        APIFY_ACTOR_PRICING_INFO='{"pricingModel":"FREE"}',
        # apify 4.1.0 reads "{}" as "no counts" and then looks the run up; a non-empty map avoids that.
        APIFY_CHARGED_ACTOR_EVENT_COUNTS='{"troupe-test": 0}',
        APIFY_HEADLESS="1",
        CRAWLEE_STORAGE_DIR=str(tmp_path / "storage"),
    )
    return env, rq.id, ds.id


@pytest.mark.parametrize("access", ["single", "shared"])
def test_crawlee_python_crawls_every_page_exactly_once(server, client, site, tmp_path, access):
    env, rq_id, ds_id = actor_env(server, client, tmp_path)
    script = os.path.join(os.path.dirname(__file__), "actors", "crawl_site.py")
    proc = subprocess.run(
        [sys.executable, script, f"{site}/page/0", access],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # only a guard against a hang; a loaded machine may be slow
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    items = list(client.dataset(ds_id).iterate_items())
    urls = sorted(item["url"] for item in items)
    assert urls == sorted(f"{site}/page/{i}" for i in range(PAGES)), proc.stderr[-3000:]
    q = client.request_queue(rq_id).get()
    assert (q.total_request_count, q.handled_request_count, q.pending_request_count) == (PAGES, PAGES, 0)
    assert q.had_multiple_clients is False, "one crawler is one client"
