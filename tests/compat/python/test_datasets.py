"""Datasets through the official Python apify-client."""

import uuid


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_get_or_create_push_and_list(client):
    name = unique("py-ds")
    ds = client.datasets().get_or_create(name=name)
    assert ds.name == name if hasattr(ds, "name") else ds["name"] == name
    ds_id = ds.id if hasattr(ds, "id") else ds["id"]
    again = client.datasets().get_or_create(name=name)
    assert (again.id if hasattr(again, "id") else again["id"]) == ds_id
    dsc = client.dataset(ds_id)
    dsc.push_items([{"n": i, "tags": ["a", "b"]} for i in range(25)])
    page = dsc.list_items(offset=5, limit=10)
    assert page.count == 10
    assert page.total == 25
    assert [it["n"] for it in page.items] == list(range(5, 15))
    assert [it["n"] for it in dsc.iterate_items()] == list(range(25))
