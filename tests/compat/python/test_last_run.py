"""The "last run" groups and Actor tasks through the official Python apify-client."""

import os
from datetime import timedelta

import pytest
from apify_client.errors import NotFoundError

from conftest import SHARED, finished, shell_actor, status_of, unique

# A tiny Actor: reads its INPUT (`mode`), writes items, an OUTPUT record and a request into its
# default storages, then succeeds or fails as told (shared with the JavaScript suite).
PROGRAM = open(os.path.join(SHARED, "last_run.sh")).read()


def built_actor(client):
    return shell_actor(client, PROGRAM, name="py-last", default_run_build="latest").id


@pytest.fixture(scope="module")
def actor_id(server):
    return built_actor(server.client())


def test_actor_last_run_by_status(client, actor_id):
    actor = client.actor(actor_id)
    ok = finished(client, actor.start(run_input={"mode": "ok"}))
    failed = finished(client, actor.start(run_input={"mode": "fail"}))
    assert status_of(ok) == "SUCCEEDED" and status_of(failed) == "FAILED"

    assert actor.last_run().get().id == failed.id
    assert actor.last_run(status="FAILED").get().id == failed.id
    last = actor.last_run(status="SUCCEEDED")
    run = last.get()
    assert run.id == ok.id
    assert run.default_dataset_id == ok.default_dataset_id

    items = last.dataset().list_items().items
    assert [item["n"] for item in items] == [0, 1, 2]
    assert {item["mode"] for item in items} == {"ok"}
    assert last.key_value_store().get_record("OUTPUT")["value"] == {"input": {"mode": "ok"}, "task": None}
    head = last.request_queue().list_head()
    assert [r.url for r in head.items] == ["https://example.com/ok"]
    assert "mode ok task None" in last.log().get()
    assert actor.last_run(status="FAILED", origin="API").log().get().count("mode fail") == 1

    # Writes through the last run land in that run's storages.
    last.dataset().push_items([{"n": 99}])
    last.key_value_store().set_record("NOTE", {"via": "last"})
    assert client.dataset(ok.default_dataset_id).list_items().total == 4
    assert client.key_value_store(ok.default_key_value_store_id).get_record("NOTE")["value"] == {"via": "last"}

    # No matching run: the client maps 404 to None.
    assert actor.last_run(status="ABORTED").get() is None
    assert actor.last_run(origin="WEB").get() is None
    # A nested storage client has no id of its own, so the client raises the 404 there.
    with pytest.raises(NotFoundError) as err:
        actor.last_run(status="ABORTED").dataset().get()
    assert err.value.type == "record-not-found"
    assert actor.last_run(status="ABORTED").key_value_store().get_record("OUTPUT") is None


def test_tasks_through_the_client(client, actor_id):
    name = unique("py-task")
    task = client.tasks().create(
        actor_id=actor_id,
        name=name,
        task_input={"mode": "ok", "keep": 1},
        memory_mbytes=256,
        title="Python task",
    )
    assert task.act_id == actor_id and task.name == name
    assert task.options.memory_mbytes == 256
    tc = client.task(task.id)
    got = tc.get()
    assert got.id == task.id and got.title == "Python task"
    task_input = got.input.model_dump() if hasattr(got.input, "model_dump") else got.input
    assert task_input == {"mode": "ok", "keep": 1}

    updated = tc.update(title="Renamed", run_timeout=timedelta(seconds=90))
    assert updated.title == "Renamed"
    assert updated.options.timeout_secs == 90
    assert updated.options.memory_mbytes == 256

    assert tc.get_input() == {"mode": "ok", "keep": 1}
    assert tc.update_input(task_input={"extra": True}) == {"mode": "ok", "keep": 1, "extra": True}

    listed = client.tasks().list()
    assert task.id in [t.id for t in listed.items]

    run = tc.start(task_input={"note": "override"})
    assert run.actor_task_id == task.id
    assert run.options.memory_mbytes == 256
    assert run.options.timeout_secs == 90
    run = finished(client, run)
    assert status_of(run) == "SUCCEEDED"
    output = client.run(run.id).key_value_store().get_record("OUTPUT")["value"]
    assert output == {"input": {"mode": "ok", "keep": 1, "extra": True, "note": "override"}, "task": task.id}

    called = finished(client, tc.call(task_input={"mode": "fail"}))
    assert status_of(called) == "FAILED"

    runs = tc.runs().list()
    assert runs.total == 2
    assert {r.id for r in runs.items} == {run.id, called.id}

    last = tc.last_run()
    assert last.get().id == called.id
    ok = tc.last_run(status="SUCCEEDED")
    assert ok.get().id == run.id
    assert [i["mode"] for i in ok.dataset().list_items().items] == ["ok", "ok", "ok"]
    assert ok.key_value_store().get_record("OUTPUT")["value"]["task"] == task.id
    assert [r.url for r in ok.request_queue().list_head().items] == ["https://example.com/ok"]
    assert f"task {task.id}" in ok.log().get()
    assert "mode fail" in last.log().get()
    assert tc.last_run(status="ABORTED").get() is None

    assert tc.webhooks().list().total == 0

    tc.delete()
    assert tc.get() is None
    # The runs stay.
    assert client.run(run.id).get().actor_task_id == task.id
