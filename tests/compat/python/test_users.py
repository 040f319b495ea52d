"""Users and rate limits through the official Python apify-client."""

from conftest import Server


def field(obj, name):
    return getattr(obj, name) if hasattr(obj, name) else obj[name]


def test_user_me_and_public_profile(client):
    me = client.user().get()
    assert field(me, "username") == "troupe"
    user_id = field(me, "id")
    assert len(user_id) == 17
    public = client.user(user_id).get()
    assert field(public, "username") == "troupe"
    by_name = client.user("troupe").get()
    assert field(by_name, "username") == "troupe"


def test_client_backs_off_on_429_and_every_push_lands():
    server = Server(extra_env={"TROUPE_RATE_LIMIT_PER_RESOURCE": "3"})
    try:
        client = server.client()
        ds = client.datasets().get_or_create(name="limited")
        dataset = client.dataset(field(ds, "id"))
        for n in range(12):
            dataset.push_items([{"n": n}])
        items = dataset.list_items().items
        assert [item["n"] for item in items] == list(range(12))
    finally:
        server.stop()
