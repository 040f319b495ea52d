"""Webhooks, webhook dispatches and schedules through the official Python apify-client.

A small HTTP receiver in the test records what troupe POSTs; background work is awaited by
polling with a deadline."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apify_client.errors import ApifyApiError

from conftest import Server, eventually, shell_actor, status_of, unique


def poll(probe):
    return eventually("a webhook call or a scheduled run", probe)


class Receiver:
    """Records POSTs on 127.0.0.1; answers 200."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body or b"null")))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def on(self, path):
        return [r for r in list(self.received) if r[0] == path]

    def close(self):
        self.httpd.shutdown()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_crud_and_dispatches(client, receiver):
    actor = shell_actor(client, "exit 0", name="hooks")
    webhooks = client.webhooks()
    created = webhooks.create(
        event_types=["ACTOR.RUN.SUCCEEDED", "ACTOR.RUN.FAILED"],
        request_url=receiver.url + "/py",
        actor_id=actor.id,
        description="from python",
        idempotency_key=unique("key"),
        payload_template='{"run": {{resource.id}}, "event": {{eventType}}}',
    )
    assert created.condition.actor_id == actor.id
    assert created.description == "from python"
    assert created.is_ad_hoc is False
    # get / update / list / the Actor's list
    webhook = client.webhook(created.id)
    assert webhook.get().id == created.id
    updated = webhook.update(description="changed", do_not_retry=True)
    assert updated.description == "changed"
    assert updated.do_not_retry is True
    assert updated.condition.actor_id == actor.id, "an update without a condition keeps it"
    assert created.id in [w.id for w in webhooks.list().items]
    assert [w.id for w in client.actor(actor.id).webhooks().list().items] == [created.id]

    # A run fires it; the dispatch is listed and succeeds.
    run = client.actor(actor.id).call()
    assert status_of(run) == "SUCCEEDED"
    got = poll(lambda: receiver.on("/py"))
    assert got[0][2] == {"run": run.id, "event": "ACTOR.RUN.SUCCEEDED"}
    dispatch_id = got[0][1]["x-apify-webhook-dispatch-id"]
    dispatch = poll(
        lambda: (d := client.webhook_dispatch(dispatch_id).get()) and status_of(d) == "SUCCEEDED" and d
    )
    assert dispatch.webhook_id == created.id
    assert dispatch.event_type == "ACTOR.RUN.SUCCEEDED"
    assert dispatch.event_data.actor_run_id == run.id
    assert dispatch.calls[0].response_status == 200
    assert dispatch_id in [d.id for d in webhook.dispatches().list().items]
    assert dispatch_id in [d.id for d in client.webhook_dispatches().list().items]

    # test() creates a TEST dispatch
    tested = webhook.test()
    assert tested.event_type == "TEST"
    poll(lambda: len(receiver.on("/py")) >= 2)

    # Bad input is refused
    with pytest.raises(ApifyApiError) as err:
        webhooks.create(event_types=["ACTOR.RUN.SUCCEEDED"], request_url="not-a-url", actor_id=actor.id)
    assert err.value.status_code == 400

    webhook.delete()
    assert webhook.get() is None
    assert client.webhook_dispatch("nope").get() is None


def test_ad_hoc_webhooks_of_a_run(client, receiver):
    actor = shell_actor(client, "exit 0", name="hooks")
    run = client.actor(actor.id).call(
        webhooks=[{"event_types": ["ACTOR.RUN.SUCCEEDED"], "request_url": receiver.url + "/adhoc"}]
    )
    got = poll(lambda: receiver.on("/adhoc"))
    assert got[0][2]["eventType"] == "ACTOR.RUN.SUCCEEDED"
    assert got[0][2]["resource"]["id"] == run.id


def test_schedule_crud_and_log(client):
    actor = shell_actor(client, "exit 0", name="hooks")
    schedules = client.schedules()
    created = schedules.create(
        cron_expression="@daily",
        is_enabled=True,
        is_exclusive=False,
        name=unique("sched"),
        timezone="Europe/Prague",
        actions=[{"type": "RUN_ACTOR", "actorId": actor.id, "runInput": {"body": '{"a": 1}', "contentType": "application/json"}}],
    )
    assert created.cron_expression == "@daily"
    assert created.next_run_at is not None
    assert created.actions[0].actor_id == actor.id
    schedule = client.schedule(created.id)
    assert schedule.get().id == created.id
    updated = schedule.update(is_enabled=False, description="paused")
    assert updated.is_enabled is False
    assert updated.description == "paused"
    assert created.id in [s.id for s in schedules.list().items]
    assert schedule.get_log() == []

    with pytest.raises(ApifyApiError) as err:
        schedules.create(cron_expression="not cron", is_enabled=True, is_exclusive=False)
    assert err.value.type == "cron-expression-invalid"

    schedule.delete()
    assert schedule.get() is None


def test_schedule_fires_and_logs():
    # Its own server: the every-second schedule must not start runs in other tests' Actors.
    server = Server()
    try:
        client = server.client()
        actor = shell_actor(client, "exit 0", name="hooks")
        created = client.schedules().create(
            cron_expression="* * * * * *",
            is_enabled=True,
            is_exclusive=True,
            name=unique("fast"),
            actions=[{"type": "RUN_ACTOR", "actorId": actor.id}],
        )
        run = poll(lambda: next(iter(client.actor(actor.id).runs().list().items), None))
        client.schedule(created.id).update(is_enabled=False)
        full = client.run(run.id).get()
        assert full.meta.origin == "SCHEDULER"
        log = client.schedule(created.id).get_log()
        assert any(entry.message == "Schedule invoked" for entry in log)
    finally:
        server.stop()
