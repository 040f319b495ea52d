"""Datasets through the official Python apify-client: every dataset operation, every items
parameter, and downloads in every format parsed with real parsers (csv, xml.etree, html.parser,
openpyxl), compared by value."""

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
from datetime import timedelta
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import openpyxl
import pytest
from apify_client import ApifyClient

from conftest import Server, unique

# Items covering nested objects and arrays, hidden fields, empty items, null, booleans, numbers,
# characters that CSV/XML/HTML must escape, and a failed page.
ITEMS = [
    {"id": 1, "title": "Alpha & <b>bold</b>", "price": 9.5, "tags": ["x", "y"],
     "address": {"city": "Prague", "zip": "11000"}, "#secret": "s1", "ok": True},
    {"id": 2, "title": 'Beta, "quoted"\nsecond line', "price": 10, "tags": [],
     "address": {"city": "Brno"}, "ok": False, "extra": None},
    {"#only": "hidden"},
    {},
    {"id": 5, "title": "Ünïcødé ✓", "tags": ["z"], "errorInfo": "failed"},
]


@pytest.fixture(scope="module")
def rich(server):
    """A dataset holding ITEMS; returns its client."""
    client = server.client()
    ds = client.datasets().get_or_create(name=unique("py-rich"))
    dsc = client.dataset(ds.id)
    dsc.push_items(ITEMS)
    return dsc


def raw_get(server, path):
    req = urllib.request.Request(server.api + path, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req) as resp:
        return resp.status, dict(resp.headers), resp.read()


def raw_post(server, path):
    req = urllib.request.Request(server.api + path, method="POST",
                                 headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req) as resp:
        return resp.status, json.loads(resp.read())


# ---- the reference conventions for tabular and XML exports (documented in the README) ----

def cell_text(value):
    if value is None or value == [] or value == {}:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return value


def leaves(path, value):
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from leaves(f"{path}/{key}", child)
    elif isinstance(value, list) and value:
        for index, child in enumerate(value):
            yield from leaves(f"{path}/{index}", child)
    else:
        yield path, value


def table(items):
    """(columns in first-appearance order, rows as {column: leaf value})."""
    columns, rows = [], []
    for item in items:
        row = {}
        for key, value in item.items():
            for path, leaf in leaves(key, value):
                row[path] = leaf
                if path not in columns:
                    columns.append(path)
        rows.append(row)
    return columns, rows


def xml_name(name):
    out = "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)
    if not out or not (out[0].isascii() and (out[0].isalpha() or out[0] == "_")):
        out = "_" + out
    return out


def xml_events(name, value):
    """(tag, text) pairs in document order for one value written as element `name`."""
    if isinstance(value, list):
        for element in value:
            yield from xml_events(name, element)
    elif isinstance(value, dict):
        yield name, None
        for key, child in value.items():
            yield from xml_events(xml_name(key), child)
    else:
        yield name, cell_text(value)


def parsed_xml_events(element):
    children = list(element)
    if children:
        yield element.tag, None
        for child in children:
            yield from parsed_xml_events(child)
    else:
        yield element.tag, element.text or ""


# ---- collection and object operations ----

def test_collection_operations_on_a_fresh_server():
    server = Server()
    try:
        client = server.client()
        unnamed = [client.datasets().get_or_create() for _ in range(2)]
        assert unnamed[0].id != unnamed[1].id and unnamed[0].name is None
        names = [unique(f"py-list{i}") for i in range(3)]
        named = [client.datasets().get_or_create(name=n) for n in names]
        # get-or-create: 201 when created, 200 with the same dataset afterwards
        status, body = raw_post(server, f"/datasets?name={names[0]}")
        assert status == 200 and body["data"]["id"] == named[0].id
        status, body = raw_post(server, f"/datasets?name={unique('py-new')}")
        assert status == 201
        named.append(client.dataset(body["data"]["id"]).get())
        again = client.datasets().get_or_create(name=names[1])
        assert again.id == named[1].id

        page = client.datasets().list()
        assert page.total == 4 and page.count == 4 and page.offset == 0 and not page.desc
        assert [d.id for d in page.items] == [d.id for d in named]
        page = client.datasets().list(offset=1, limit=2)
        assert [d.id for d in page.items] == [named[1].id, named[2].id]
        assert page.limit == 2 and page.total == 4
        page = client.datasets().list(desc=True, limit=1)
        assert [d.id for d in page.items] == [named[3].id]
        page = client.datasets().list(unnamed=True)
        assert page.total == 6
        assert {d.id for d in page.items} == {d.id for d in unnamed + named}
        assert [d.id for d in client.datasets().list(unnamed=True, desc=True).items][-2:] == \
            [unnamed[1].id, unnamed[0].id]

        # get by id and by name references
        ds = named[0]
        assert client.dataset(ds.id).get().name == names[0]
        assert client.dataset(f"~{names[0]}").get().id == ds.id
        assert client.dataset(f"troupe~{names[0]}").get().id == ds.id
        assert client.dataset(f"troupe/{names[0]}").get().id == ds.id
        assert client.dataset("~no-such-dataset").get() is None
        assert client.dataset("aaaaaaaaaaaaaaaaa").get() is None

        # update name and generalAccess
        new_name = unique("py-renamed")
        updated = client.dataset(ds.id).update(name=new_name, general_access="ANYONE_WITH_ID_CAN_READ")
        assert updated.name == new_name and updated.general_access == "ANYONE_WITH_ID_CAN_READ"
        fetched = client.dataset(ds.id).get()
        assert fetched.name == new_name and fetched.general_access == "ANYONE_WITH_ID_CAN_READ"
        assert client.dataset(f"~{names[0]}").get() is None
        # anyone with the id can read now, even without a token
        anonymous = ApifyClient(api_url=server.origin)
        assert anonymous.dataset(ds.id).list_items().items == []
        with pytest.raises(Exception):
            anonymous.dataset(ds.id).push_items([{"a": 1}])

        # statistics, delete
        client.dataset(ds.id).push_items([{"price": 3, "name": "ab"}, {"price": 5}])
        stats = client.dataset(ds.id).get_statistics()
        assert stats is not None
        fields = stats.field_statistics
        price = fields["price"]
        price = price if isinstance(price, dict) else price.model_dump(by_alias=True)
        name = fields["name"]
        name = name if isinstance(name, dict) else name.model_dump(by_alias=True)
        assert (price["min"], price["max"]) == (3, 5)
        assert name["emptyCount"] == 1 and name["min"] == 2
        client.dataset(ds.id).delete()
        assert client.dataset(ds.id).get() is None
        assert client.datasets().list().total == 3
    finally:
        server.stop()


def test_signed_public_items_url(server):
    client = ApifyClient(server.token, api_url=server.origin, api_public_url=server.origin)
    dsc = client.dataset(client.datasets().get_or_create(name=unique("py-signed")).id)
    dsc.push_items([{"n": 1}, {"n": 2}])
    # Restricted by default: anonymous reads need a signature.
    unsigned = f"{server.api}/datasets/{dsc.resource_id}/items"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(unsigned)
    assert err.value.code == 401
    url = dsc.create_items_public_url(limit=1, expires_in=timedelta(minutes=5))
    assert "signature=" in url and "token=" not in url
    with urllib.request.urlopen(url) as resp:
        assert json.loads(resp.read()) == [{"n": 1}]
    tampered = url.replace("signature=", "signature=x")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(tampered)


def test_dataset_object_fields(client):
    ds = client.datasets().get_or_create(name=unique("py-fields"))
    client.dataset(ds.id).push_items([{"a": 1}, {"#h": 1}, {}])
    got = client.dataset(ds.id).get()
    assert got.item_count == 3 and got.clean_item_count == 1
    assert got.user_id and got.console_url and got.items_public_url
    assert got.created_at.tzinfo is not None and got.modified_at >= got.created_at
    assert got.url_signing_secret_key and got.stats.write_count == 3


# ---- pushing ----

@pytest.mark.parametrize("compression", ["gzip", "brotli"])
def test_push_single_object_and_large_compressed_arrays(server, compression):
    client = ApifyClient(server.token, api_url=server.origin, compression=compression)
    dsc = client.dataset(client.datasets().get_or_create(name=unique(f"py-push-{compression}")).id)
    dsc.push_items({"single": True})
    big = [{"n": n, "text": "lorem ipsum " * 20, "nested": {"k": [n, str(n)]}} for n in range(3000)]
    assert len(json.dumps(big)) > 500_000  # well over the 1 KiB compression threshold
    dsc.push_items(big)
    dsc.push_items(json.dumps([{"as": "string"}]))
    items = list(dsc.iterate_items())
    assert items[0] == {"single": True}
    assert items[1:3001] == big
    assert items[3001] == {"as": "string"}
    assert dsc.get().item_count == 3002


def test_push_rejects_non_objects_and_stores_nothing(client):
    dsc = client.dataset(client.datasets().get_or_create(name=unique("py-bad")).id)
    with pytest.raises(Exception) as err:
        dsc.push_items([{"ok": 1}, 2, "x"])
    assert "schema-validation-error" in str(getattr(err.value, "type", "")) or "400" in str(err.value)
    assert dsc.get().item_count == 0


# ---- list_items / iterate_items with each parameter ----

def test_list_items_paging(rich):
    page = rich.list_items()
    assert page.items == ITEMS and page.total == 5 and page.count == 5
    assert page.offset == 0 and page.limit == 999999999999 and page.desc is False
    page = rich.list_items(offset=1, limit=2)
    assert page.items == ITEMS[1:3] and page.count == 2 and page.limit == 2 and page.offset == 1
    page = rich.list_items(desc=True, limit=2)
    assert page.items == [ITEMS[4], ITEMS[3]] and page.desc is True
    page = rich.list_items(desc=True, offset=3)
    assert page.items == [ITEMS[1], ITEMS[0]]
    page = rich.list_items(offset=10)
    assert page.items == [] and page.count == 0 and page.total == 5


def test_list_items_fields_omit(rich):
    page = rich.list_items(fields=["title", "id"], limit=2)
    assert page.items == [{"title": ITEMS[0]["title"], "id": 1}, {"title": ITEMS[1]["title"], "id": 2}]
    assert list(page.items[0].keys()) == ["title", "id"]
    page = rich.list_items(omit=["tags", "address", "#secret", "title"], limit=2)
    assert page.items == [{"id": 1, "price": 9.5, "ok": True},
                          {"id": 2, "price": 10, "ok": False, "extra": None}]


def test_list_items_unwind(rich):
    page = rich.list_items(unwind=["tags"], fields=["id", "tags"])
    assert page.items == [{"id": 1, "tags": "x"}, {"id": 1, "tags": "y"}, {"id": 2},
                          {}, {}, {"id": 5, "tags": "z"}]
    assert page.total == 5
    page = rich.list_items(unwind=["address"], limit=2, fields=["id", "city", "zip"])
    assert page.items == [{"id": 1, "city": "Prague", "zip": "11000"}, {"id": 2, "city": "Brno"}]
    # desc flips items, not the elements unwound from one item
    page = rich.list_items(unwind=["tags"], desc=True, offset=3, fields=["tags"])
    assert page.items == [{}, {"tags": "x"}, {"tags": "y"}]


def test_list_items_flatten(rich):
    page = rich.list_items(flatten=["address"], fields=["id", "address"], limit=2)
    assert page.items == [{"id": 1, "address.city": "Prague", "address.zip": "11000"},
                          {"id": 2, "address.city": "Brno"}]


def test_list_items_clean_skip_empty_skip_hidden(rich):
    page = rich.list_items(clean=True)
    assert page.items == [{k: v for k, v in it.items() if not k.startswith("#")}
                          for it in ITEMS if any(not k.startswith("#") for k in it)]
    assert page.count == 5
    page = rich.list_items(skip_empty=True)
    assert page.items == [it for it in ITEMS if it]
    page = rich.list_items(skip_hidden=True)
    assert page.items == [{k: v for k, v in it.items() if not k.startswith("#")} for it in ITEMS]


def test_legacy_filters_over_http(server, rich):
    _, _, body = raw_get(server, f"/datasets/{rich.resource_id}/items?skipFailedPages=1")
    assert json.loads(body) == ITEMS[:4]
    _, _, body = raw_get(server, f"/datasets/{rich.resource_id}/items?simplified=1&limit=2")
    assert json.loads(body) == [{}, {}]


def test_iterate_items_each_parameter(client):
    dsc = client.dataset(client.datasets().get_or_create(name=unique("py-iter")).id)
    items = [{"n": n, "#h": n} if n % 10 else {"#h": n} for n in range(2500)]
    dsc.push_items(items)
    assert list(dsc.iterate_items(chunk_size=300)) == items
    assert list(dsc.iterate_items(offset=2400)) == items[2400:]
    assert list(dsc.iterate_items(offset=100, limit=250, chunk_size=100)) == items[100:350]
    assert list(dsc.iterate_items(desc=True, chunk_size=700)) == items[::-1]
    assert list(dsc.iterate_items(desc=True, limit=5)) == items[:-6:-1]
    # clean drops whole pages of hidden-only items; the iterator must still advance and stop
    clean = list(dsc.iterate_items(clean=True, chunk_size=10))
    assert clean == [{"n": n} for n in range(2500) if n % 10]
    assert list(dsc.iterate_items(skip_hidden=True, limit=3)) == [{}, {"n": 1}, {"n": 2}]
    assert list(dsc.iterate_items(skip_empty=True, limit=3)) == items[:3]
    assert list(dsc.iterate_items(fields=["n"], limit=2)) == [{}, {"n": 1}]
    assert list(dsc.iterate_items(omit=["#h"], offset=1, limit=1)) == [{"n": 1}]
    assert list(dsc.iterate_items(offset=5000)) == []


def test_async_client_iterates(server):
    async def run():
        client = server.async_client()
        ds = await client.datasets().get_or_create(name=unique("py-async"))
        dsc = client.dataset(ds.id)
        await dsc.push_items([{"n": n} for n in range(1200)])
        got = [item async for item in dsc.iterate_items(chunk_size=500)]
        assert got == [{"n": n} for n in range(1200)]
        page = await dsc.list_items(offset=1100, desc=True)
        assert page.items == [{"n": n} for n in range(99, -1, -1)]
        await dsc.delete()
        assert await dsc.get() is None
    asyncio.run(run())


# ---- downloads in every format ----

def test_download_json_and_jsonl(rich):
    assert json.loads(rich.get_items_as_bytes()) == ITEMS
    assert json.loads(rich.get_items_as_bytes(item_format="json", desc=True, limit=1)) == [ITEMS[4]]
    lines = rich.get_items_as_bytes(item_format="jsonl").decode().splitlines()
    assert [json.loads(line) for line in lines] == ITEMS
    with_bom = rich.get_items_as_bytes(item_format="json", bom=True)
    assert with_bom.startswith(b"\xef\xbb\xbf") and json.loads(with_bom[3:]) == ITEMS


def test_download_csv_values(rich):
    data = rich.get_items_as_bytes(item_format="csv")
    assert data.startswith(b"\xef\xbb\xbf")  # BOM by default
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    columns, expected = table(ITEMS)
    assert rows[0] == columns
    assert "address/city" in columns and "tags/1" in columns
    assert rows[1:] == [[cell_text(row.get(c)) for c in columns] for row in expected]

    data = rich.get_items_as_bytes(item_format="csv", bom=False, delimiter=";", skip_header_row=True,
                                   fields=["title", "id"], limit=2)
    assert not data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=";"))
    assert rows == [[ITEMS[0]["title"], "1"], [ITEMS[1]["title"], "2"]]

    data = rich.get_items_as_bytes(item_format="csv", bom=False, fields=["missing", "id"], limit=1)
    assert list(csv.reader(io.StringIO(data.decode(), newline=""))) == [["missing", "id"], ["", "1"]]

    data = rich.get_items_as_bytes(item_format="csv", delimiter="\t", clean=True, fields=["id", "tags"])
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter="\t"))
    # columns follow `fields`; hidden-only and empty items are gone; an empty array is an empty cell
    assert rows == [["id", "tags/0", "tags/1", "tags"], ["1", "x", "y", ""], ["2", "", "", ""],
                    ["5", "z", "", ""]]


def test_download_xlsx_values(rich):
    data = rich.get_items_as_bytes(item_format="xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    columns, expected = table(ITEMS)
    assert rows[0] == columns
    assert len(rows) == 1 + len(ITEMS)
    for got, row in zip(rows[1:], expected):
        want = []
        for c in columns:
            v = row.get(c)
            want.append(None if v is None or v == [] or v == {} else v)
        assert got == want


class TableParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_download_html_values(rich):
    parser = TableParser()
    parser.feed(rich.get_items_as_bytes(item_format="html").decode())
    columns, expected = table(ITEMS)
    assert parser.rows[0] == columns
    assert parser.rows[1:] == [[cell_text(row.get(c)) for c in columns] for row in expected]


def test_download_xml_values(rich):
    root = ET.fromstring(rich.get_items_as_bytes(item_format="xml"))
    assert root.tag == "items" and [e.tag for e in root] == ["item"] * len(ITEMS)
    for element, item in zip(root, ITEMS):
        assert list(parsed_xml_events(element)) == list(xml_events("item", item)) or \
            (not item and element.text in (None, ""))
    root = ET.fromstring(rich.get_items_as_bytes(item_format="xml", xml_root="products", xml_row="product",
                                                 limit=1, fields=["id", "tags"]))
    assert root.tag == "products"
    assert [(e.tag, [(c.tag, c.text) for c in e]) for e in root] == \
        [("product", [("id", "1"), ("tags", "x"), ("tags", "y")])]


def test_download_rss_values(rich):
    root = ET.fromstring(rich.get_items_as_bytes(item_format="rss", limit=2))
    assert root.tag == "rss"
    channel = root.find("channel")
    assert channel.find("title").text
    items = channel.findall("item")
    assert len(items) == 2
    for element, item in zip(items, ITEMS):
        assert list(parsed_xml_events(element)) == list(xml_events("item", item))


def test_attachment_and_content_types(rich):
    expected = {"json": "application/json", "jsonl": "application/jsonl", "csv": "text/csv",
                "html": "text/html", "xml": "application/xml", "rss": "application/rss+xml",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
    for fmt, content_type in expected.items():
        with rich.stream_items(item_format=fmt, attachment=True) as response:
            assert response.headers["content-type"].startswith(content_type)
            disposition = response.headers["content-disposition"]
            assert disposition.startswith("attachment") and f".{fmt}" in disposition
        with rich.stream_items(item_format=fmt) as response:
            assert "content-disposition" not in response.headers
