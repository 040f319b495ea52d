"""The P2 operations troupe answers (input validation, build OpenAPI documents, charges, account
limits and usage, the store) through the official Python apify-client."""

import json

import pytest
from apify_client.errors import ApifyApiError

from conftest import create_and_build, shell_actor, unique

INPUT_SCHEMA = {
    "title": "In", "type": "object", "schemaVersion": 1,
    "properties": {
        "url": {"title": "URL", "type": "string", "editor": "textfield", "description": "Where"},
        "pages": {"title": "Pages", "type": "integer", "minimum": 1, "maximum": 10, "description": "How many"},
        "mode": {"title": "Mode", "type": "string", "enum": ["fast", "slow"], "editor": "select", "description": "How"},
    },
    "required": ["url"],
}


def schema_actor(client):
    definition = {"actorSpecification": 1, "startCommand": "sh main.sh", "input": INPUT_SCHEMA}
    files = [
        {"name": ".actor/actor.json", "format": "TEXT", "content": json.dumps(definition)},
        {"name": "main.sh", "format": "TEXT", "content": "exit 0"},
    ]
    return create_and_build(client, files, name="schema")


def error_type(exc):
    return exc.value.type


def test_validate_input(client):
    actor = schema_actor(client)
    ac = client.actor(actor.id)
    assert ac.validate_input({"url": "https://example.com", "pages": 3, "mode": "fast"}) is True
    assert ac.validate_input({"url": "x"}, build="latest") is True
    for bad in [{"pages": 3}, {"url": 5}, {"url": "x", "pages": 11}, {"url": "x", "mode": "medium"}]:
        with pytest.raises(ApifyApiError) as exc:
            ac.validate_input(bad)
        assert exc.value.status_code == 400 and error_type(exc) == "invalid-input", bad
    with pytest.raises(ApifyApiError) as exc:
        ac.validate_input({"url": "x"}, build="no-such-tag")
    assert exc.value.status_code == 400


def test_build_openapi_definition(client):
    actor = schema_actor(client)
    build_id = client.actor(actor.id).default_build().get().id
    doc = client.build(build_id).get_open_api_definition()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["schemas"]["inputSchema"]["required"] == ["url"]
    assert doc["components"]["schemas"]["inputSchema"]["properties"]["pages"]["maximum"] == 10
    assert any(path.endswith("/run-sync-get-dataset-items") for path in doc["paths"])


def test_charge_is_refused_for_free_actors(client):
    actor = shell_actor(client, "sleep 300", name="charged")
    run = client.actor(actor.id).start()
    try:
        with pytest.raises(ApifyApiError) as exc:
            client.run(run.id).charge("ANALYZE_PAGE", count=2)
        assert exc.value.status_code == 400
        assert error_type(exc) == "cannot-charge-non-pay-per-event-actor"
        assert client.run(run.id).get().charged_event_counts in ({}, None)
    finally:
        client.run(run.id).abort()


def test_limits_and_monthly_usage(client):
    limits = client.user().limits()
    assert limits.limits.max_monthly_usage_usd == 0
    assert limits.current.actor_count >= 0
    assert limits.monthly_usage_cycle.start_at < limits.monthly_usage_cycle.end_at
    usage = client.user().monthly_usage()
    assert usage.total_usage_credits_usd_after_volume_discount == 0
    assert usage.daily_service_usages == []
    with pytest.raises(ApifyApiError) as exc:
        client.user().update_limits(max_monthly_usage_usd=10)
    assert exc.value.status_code == 501 and error_type(exc) == "not-implemented"


def test_store_lists_public_actors(client):
    name = unique("public")
    public = client.actors().create(name=name, is_public=True, title="Public thing")
    client.actors().create(name=unique("private"))
    page = client.store().list(search=name)
    assert [item.id for item in page.items] == [public.id]
    assert page.items[0].title == "Public thing"
    assert client.store().list(search=unique("nothing")).total == 0
