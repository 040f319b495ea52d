"""Key-value stores through the official Python apify-client."""

import gzip
import hashlib
import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from conftest import unique


def new_store(client):
    store = client.key_value_stores().get_or_create(name=unique("py-kv"))
    return store, client.key_value_store(store.id)


def fetch(url):
    """GET without any token; returns (status, headers, body)."""
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_json_text_binary_round_trip(client):
    _, kv = new_store(client)
    value = {"hello": "world", "n": [1, 2, 3], "nested": {"x": None}}
    kv.set_record("json", value)
    big = {"items": [{"i": i, "s": "x" * 20} for i in range(500)]}  # > 1 KiB: sent compressed
    kv.set_record("big-json", big)
    kv.set_record("text", "héllo wörld")
    binary = bytes(range(256)) * 40
    kv.set_record("bin", binary)
    kv.set_record("png", b"\x89PNG\r\n\x1a\n" + binary, content_type="image/png")

    got = kv.get_record("json")
    assert got["value"] == value
    assert got["content_type"].startswith("application/json")
    assert kv.get_record("big-json")["value"] == big
    got = kv.get_record("text")
    assert got["value"] == "héllo wörld"
    assert got["content_type"].startswith("text/plain")
    got = kv.get_record("bin")
    assert got["value"] == binary
    assert got["content_type"] == "application/octet-stream"
    got = kv.get_record_as_bytes("png")
    assert got["value"] == b"\x89PNG\r\n\x1a\n" + binary
    assert got["content_type"] == "image/png"
    # Overwrite changes type and value.
    kv.set_record("json", "now text")
    assert kv.get_record("json")["value"] == "now text"


def test_precompressed_record_round_trips(client):
    _, kv = new_store(client)
    value = {"compressed": True, "data": list(range(100))}
    kv.set_record("gz", gzip.compress(json.dumps(value).encode()), content_type="application/json", content_encoding="gzip")
    got = kv.get_record("gz")
    assert got["value"] == value
    assert got["content_type"] == "application/json"


def test_missing_records_exists_and_delete(client, server):
    _, kv = new_store(client)
    assert kv.get_record("nope") is None
    assert kv.get_record_as_bytes("nope") is None
    assert kv.record_exists("nope") is False
    kv.set_record("yes", {"a": 1})
    assert kv.record_exists("yes") is True
    kv.delete_record("yes")
    assert kv.record_exists("yes") is False
    kv.delete_record("yes")  # deleting a missing key is not an error
    assert client.key_value_store("NoSuchStore12345x").get_record("x") is None
    with kv.stream_record("nope") as missing:
        assert missing is None


def test_keys_paging_prefix_and_iteration(client):
    _, kv = new_store(client)
    keys = [f"k-{i:05}" for i in range(1100)] + ["A", "Z", "a", "z", "k", "k-", "kz", "(x)", "0"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: kv.set_record(k, k), keys))
    expected = sorted(keys, key=lambda k: k.encode())

    first = kv.list_keys()
    assert first.count == 1000 and first.limit == 1000 and first.is_truncated
    assert first.next_exclusive_start_key == expected[999]
    assert first.exclusive_start_key is None
    assert [item.key for item in first.items] == expected[:1000]
    assert first.items[0].size == len(expected[0])
    assert str(first.items[0].record_public_url).startswith("http")
    second = kv.list_keys(exclusive_start_key=first.next_exclusive_start_key)
    assert [item.key for item in second.items] == expected[1000:]
    assert second.is_truncated is False
    assert second.next_exclusive_start_key is None

    page = kv.list_keys(limit=7, prefix="k-01", exclusive_start_key="k-01003")
    assert [item.key for item in page.items] == [f"k-{i:05}" for i in range(1004, 1011)]
    assert page.is_truncated and page.next_exclusive_start_key == "k-01010"
    page = kv.list_keys(prefix="k-0109")
    assert page.count == 10 and not page.is_truncated

    assert [item.key for item in kv.iterate_keys()] == expected
    assert [item.key for item in kv.iterate_keys(chunk_size=100, prefix="k-00")] == [f"k-{i:05}" for i in range(1000)]
    assert [item.key for item in kv.iterate_keys(limit=5)] == expected[:5]


@pytest.mark.filterwarnings("ignore:Streaming a request body is experimental")
def test_stream_large_record(client):
    _, kv = new_store(client)
    chunk = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    payload = chunk * 24
    kv.set_record("large", io.BytesIO(payload), content_type="application/octet-stream")
    digest = hashlib.sha256()
    size = 0
    with kv.stream_record("large") as record:
        assert record["content_type"] == "application/octet-stream"
        for part in record["value"].iter_bytes():
            digest.update(part)
            size += len(part)
    assert size == len(payload)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    keys = kv.list_keys()
    assert keys.items[0].size == len(payload)


def test_public_urls_open_without_a_token(server):
    # Public URLs are built client-side from api_public_url (APIFY_API_PUBLIC_BASE_URL).
    from apify_client import ApifyClient

    client = ApifyClient(server.token, api_url=server.origin, api_public_url=server.origin)
    store, kv = new_store(client)
    assert store.url_signing_secret_key
    kv.set_record("INPUT", {"public": True})
    kv.set_record("other", "x")
    url = kv.get_record_public_url("INPUT")
    assert "signature=" in url and "token" not in url
    status, headers, body = fetch(url)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"public": True}
    # Without the signature it needs a token.
    status, _, body = fetch(url.split("?")[0])
    assert status == 401 and json.loads(body)["error"]["type"] == "token-not-provided"

    for kwargs in ({}, {"expires_in": timedelta(minutes=5)}, {"prefix": "IN", "limit": 10}):
        keys_url = kv.create_keys_public_url(**kwargs)
        assert "signature=" in keys_url
        status, _, body = fetch(keys_url)
        assert status == 200, body
        data = json.loads(body)["data"]
        listed = [item["key"] for item in data["items"]]
        assert "INPUT" in listed
        # The listing's record URLs open without a token too.
        item = next(item for item in data["items"] if item["key"] == "INPUT")
        status, _, body = fetch(item["recordPublicUrl"])
        assert status == 200 and json.loads(body) == {"public": True}
    status, _, _ = fetch(f"{server.api}/key-value-stores/{store.id}/keys")
    assert status == 401
