"""Client methods the other files do not reach (see docs/client-coverage.md): every method of the
last-run storage clients, run lifecycle helpers (reboot, metamorph, graceful abort, delete, log
redirection, status watcher), versions and environment variables, build abort/delete, collection
iterators and run-list filters, and the async clients' iterators."""

import asyncio
import json
import logging
import os
import time
from datetime import timedelta

import pytest

from conftest import SHARED, Gate, finished, shell_actor, status_of, unique, wait_for_log

PROGRAM = open(os.path.join(SHARED, "last_run.sh")).read()


@pytest.fixture(scope="module")
def actor_id(server):
    return shell_actor(server.client(), PROGRAM, name="py-cov", default_run_build="latest").id


class Capture(logging.Handler):
    """Collects the messages a logger receives."""

    def __init__(self, name):
        super().__init__()
        self.messages = []
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_last_run_storage_clients_every_method(client, actor_id):
    actor = client.actor(actor_id)
    ok = finished(client, actor.start(run_input={"mode": "ok"}))
    last = actor.last_run(status="SUCCEEDED")

    # Dataset of the last run.
    ds = last.dataset()
    assert ds.get().id == ok.default_dataset_id
    assert [i["n"] for i in ds.iterate_items(desc=True)] == [2, 1, 0]
    assert [i["n"] for i in ds.iterate_items(offset=1, limit=1)] == [1]
    page = ds.list_items(offset=1, limit=1, desc=True, fields=["n"])
    assert (page.items, page.total, page.offset, page.desc) == ([{"n": 1}], 3, 1, True)
    assert ds.get_items_as_bytes(item_format="csv", fields=["n", "mode"], bom=False) == b"n,mode\n0,ok\n1,ok\n2,ok\n"
    lines = ds.get_items_as_bytes(item_format="jsonl", omit=["task"]).decode().splitlines()
    assert [json.loads(x) for x in lines] == [{"n": i, "mode": "ok"} for i in range(3)]
    xml = ds.get_items_as_bytes(item_format="xml", limit=1, xml_root="rows", xml_row="row").decode()
    assert "<rows>" in xml and "<row><n>0</n>" in xml and "<n>1</n>" not in xml
    with ds.stream_items(item_format="json", desc=True, limit=2) as response:
        assert [i["n"] for i in json.loads(response.read())] == [2, 1]
    stats = ds.get_statistics()
    assert stats.field_statistics["n"]["max"] == 2
    ds.push_items([{"n": 3, "mode": "pushed"}])
    assert [i["n"] for i in last.iterate_dataset_items()] == [0, 1, 2, 3]
    renamed = unique("last-ds")
    assert ds.update(name=renamed).name == renamed
    assert client.dataset(ok.default_dataset_id).get().name == renamed

    # Key-value store of the last run.
    kv = last.key_value_store()
    assert kv.get().id == ok.default_key_value_store_id
    assert [k.key for k in kv.list_keys().items] == ["INPUT", "OUTPUT"]
    assert [k.key for k in kv.list_keys(limit=1, exclusive_start_key="INPUT").items] == ["OUTPUT"]
    assert [k.key for k in kv.iterate_keys(prefix="OUT")] == ["OUTPUT"]
    assert (kv.record_exists("OUTPUT"), kv.record_exists("NOPE")) == (True, False)
    raw = kv.get_record_as_bytes("OUTPUT")
    assert json.loads(raw["value"]) == {"input": {"mode": "ok"}, "task": None}
    with kv.stream_record("INPUT") as record:
        assert json.loads(record["value"].read()) == {"mode": "ok"}
    kv.set_record("BLOB", b"\x00\x01\x02", content_type="application/octet-stream")
    assert client.key_value_store(ok.default_key_value_store_id).get_record_as_bytes("BLOB")["value"] == b"\x00\x01\x02"
    kv.delete_record("BLOB")
    assert kv.get_record("BLOB") is None

    # Request queue of the last run.
    rq = last.request_queue()
    assert rq.get().id == ok.default_request_queue_id
    added = rq.add_request({"url": "https://example.com/2", "uniqueKey": "two"})
    assert not added.was_already_present
    got = rq.get_request(added.request_id)
    assert got.url == "https://example.com/2"
    rq.update_request({**got.model_dump(by_alias=True, exclude_none=True), "userData": {"label": "x"}})
    assert rq.get_request(added.request_id).user_data.model_dump()["label"] == "x"
    batch = rq.batch_add_requests([{"url": f"https://example.com/b{i}", "uniqueKey": f"b{i}"} for i in range(3)])
    assert len(batch.processed_requests) == 3 and not batch.unprocessed_requests
    deleted = rq.batch_delete_requests([{"uniqueKey": "b0"}])
    assert [d.unique_key for d in deleted.processed_requests] == ["b0"]
    # (Listed in id order, not insertion order.)
    assert sorted(r.unique_key for r in rq.iterate_requests()) == ["b1", "b2", "ok", "two"]
    assert len(rq.list_requests(limit=2).items) == 2
    locked = rq.list_and_lock_head(lock_duration=timedelta(seconds=60), limit=2)
    assert [r.unique_key for r in locked.items] == ["ok", "two"]
    # Requests locked (by anyone) are listed after the unlocked ones (SDK-CONTRACT).
    assert [r.unique_key for r in rq.list_head().items] == ["b1", "b2", "ok", "two"]
    first = locked.items[0].id
    before = locked.items[0].lock_expires_at
    prolonged = rq.prolong_request_lock(first, lock_duration=timedelta(seconds=600))
    assert prolonged.lock_expires_at > before
    rq.delete_request_lock(first, forefront=True)
    assert [r.unique_key for r in rq.list_head().items] == ["ok", "b1", "b2", "two"]
    assert rq.unlock_requests().unlocked_count == 1
    rq.delete_request(added.request_id)
    assert rq.get_request(added.request_id) is None
    assert [r.unique_key for r in rq.list_head(limit=10).items] == ["ok", "b1", "b2"]

    # Log of the last run, every way the client reads it.
    text = last.log().get()
    assert "mode ok task None" in text
    assert last.log().get(raw=True) == text
    assert last.log().get_as_bytes().decode() == text
    with last.log().stream() as response:
        assert response.read().decode() == text

    # The run object itself.
    updated = last.update(status_message="checked", is_status_message_terminal=True)
    assert updated.id == ok.id and updated.status_message == "checked"
    assert status_of(last.wait_for_finish()) == "SUCCEEDED"
    assert client.run(ok.id).get().status_message == "checked"


def test_run_lifecycle_helpers(client, actor_id):
    gate = Gate()
    try:
        looper = shell_actor(client, f"echo start $ACTOR_INPUT_KEY; {gate.wait()}; echo done", name="py-cov-loop")
        target = shell_actor(client, 'echo "target $ACTOR_INPUT_KEY"', name="py-cov-target")

        # reboot: the same run starts its process again; metamorph: it becomes the target.
        run = client.actor(looper.id).start()
        wait_for_log(client, run.id, "start INPUT")
        # Through the last-run URLs here (acts/{id}/runs/last/...); the JS suite uses actor-runs/{id}.
        running = client.actor(looper.id).last_run(status="RUNNING")
        assert status_of(running.reboot()) == "RUNNING"
        wait_for_log(client, run.id, "Restarting")
        eventually_two = lambda: client.run(run.id).log().get().count("start INPUT") == 2  # noqa: E731
        deadline = time.time() + 60
        while not eventually_two():
            assert time.time() < deadline, client.run(run.id).log().get()
            time.sleep(0.1)
        morphed = running.metamorph(target_actor_id=target.id, run_input={"to": "target"})
        assert morphed.id == run.id
        done = finished(client, run)
        assert status_of(done) == "SUCCEEDED"
        assert [m.actor_id for m in done.metamorphs] == [target.id]
        key = done.metamorphs[0].input_key
        assert f"target {key}" in client.run(run.id).log().get()
        assert client.run(run.id).key_value_store().get_record(key)["value"] == {"to": "target"}

        # Log redirection and the status watcher follow a run until it ends.
        logs = Capture(unique("py-cov-log"))
        statuses = Capture(unique("py-cov-status"))
        run = client.actor(looper.id).start()
        wait_for_log(client, run.id, "start INPUT")
        streamed = client.run(run.id).get_streamed_log(to_logger=logs.logger)
        watcher = client.run(run.id).get_status_message_watcher(
            to_logger=statuses.logger, check_period=timedelta(milliseconds=100))
        streamed.start()
        watcher.start()
        client.run(run.id).update(status_message="half way")
        deadline = time.time() + 60
        while not any("half way" in m for m in statuses.messages):
            assert time.time() < deadline, statuses.messages
            time.sleep(0.05)
        gate.open()
        finished(client, run)
        client.run(run.id).update(status_message="all done", is_status_message_terminal=True)
        deadline = time.time() + 60
        while not (any(m.endswith(" done") for m in logs.messages) and any("all done" in m for m in statuses.messages)):
            assert time.time() < deadline, (logs.messages, statuses.messages)
            time.sleep(0.05)
        streamed.stop()
        watcher.stop()
        assert any("start INPUT" in m for m in logs.messages), logs.messages
        assert "Status: RUNNING, Message: half way" in statuses.messages
        assert "Status: SUCCEEDED, Message: all done" in statuses.messages

        # Graceful abort, then delete.
        gate.close()
        gate = Gate()
        looper2 = shell_actor(client, f"echo start; {gate.wait()}", name="py-cov-abort")
        run = client.actor(looper2.id).start()
        wait_for_log(client, run.id, "start")
        # (A shell program ignores the graceful abort's event; a plain abort then kills it.)
        assert status_of(client.actor(looper2.id).last_run().abort(gracefully=True)) == "ABORTING"
        assert "Aborting gracefully" in wait_for_log(client, run.id, "Aborting gracefully")
        assert status_of(client.run(run.id).abort()) in ("ABORTING", "ABORTED")
        assert status_of(finished(client, run)) == "ABORTED"
        restricted = client.run(run.id).update(general_access="RESTRICTED")
        assert restricted.general_access == "RESTRICTED"
        client.run(run.id).delete()
        assert client.run(run.id).get() is None
        assert run.id not in [r.id for r in client.actor(looper2.id).runs().list().items]
    finally:
        gate.open()
        gate.close()


def test_versions_env_vars_builds_and_actor_crud(client):
    actor = shell_actor(client, "echo hi", name="py-cov-crud")
    ac = client.actor(actor.id)
    assert [v.version_number for v in ac.versions().list().items] == ["0.1"]
    created = ac.versions().create(
        version_number="0.2", source_type="SOURCE_FILES", build_tag="beta",
        source_files=[{"name": "main.sh", "format": "TEXT", "content": "echo two"}])
    assert (created.version_number, created.build_tag) == ("0.2", "beta")
    assert ac.version("0.2").update(build_tag="next").build_tag == "next"
    assert ac.version("0.2").get().build_tag == "next"
    assert sorted(v.version_number for v in ac.versions().list().items) == ["0.1", "0.2"]

    env = ac.version("0.2").env_vars()
    assert env.create(name="PLAIN", value="one").value == "one"
    secret = env.create(name="HIDDEN", value="s3cret", is_secret=True)
    assert secret.is_secret and secret.value is None
    listed = {e.name: e.value for e in env.list().items}
    assert listed == {"PLAIN": "one", "HIDDEN": None}
    assert ac.version("0.2").env_var("PLAIN").update(name="PLAIN", value="two").value == "two"
    assert ac.version("0.2").env_var("PLAIN").get().value == "two"
    ac.version("0.2").env_var("PLAIN").delete()
    assert ac.version("0.2").env_var("PLAIN").get() is None
    assert [e.name for e in env.list().items] == ["HIDDEN"]
    ac.version("0.2").delete()
    assert ac.version("0.2").get() is None

    # Builds: list/iterate (newest first with desc), abort of a finished build is a no-op,
    # delete of a non-default build, default build cannot be deleted.
    second = client.build(ac.build(version_number="0.1").id).wait_for_finish()
    ids = [b.id for b in ac.builds().iterate(desc=True, chunk_size=1)]
    assert ids[0] == second.id and len(ids) == 2
    assert status_of(client.build(second.id).abort()) == "SUCCEEDED"
    older = ids[1]
    client.build(older).delete()
    assert client.build(older).get() is None
    assert [b.id for b in ac.builds().list().items] == [second.id]

    updated = ac.update(title="Coverage", description="every method")
    assert (updated.title, updated.description) == ("Coverage", "every method")
    ac.delete()
    assert ac.get() is None


def test_collection_iterators_and_run_filters(client, actor_id):
    actor = client.actor(actor_id)
    first = finished(client, actor.start(run_input={"mode": "ok"}, max_items=5, memory_mbytes=256))
    time.sleep(0.01)
    second = finished(client, actor.start(run_input={"mode": "fail"}))
    assert first.options.max_items == 5

    runs = actor.runs()
    assert [r.id for r in runs.list(started_after=second.started_at).items] == [second.id]
    assert first.id in [r.id for r in runs.list(started_before=first.started_at).items]
    assert second.id not in [r.id for r in runs.list(started_before=first.started_at).items]
    both = client.runs().list(started_after=first.started_at, started_before=second.started_at,
                              status=["SUCCEEDED", "FAILED"], desc=True)
    assert [r.id for r in both.items] == [second.id, first.id]
    assert [r.id for r in runs.iterate(chunk_size=1, desc=True, limit=2)] == [second.id, first.id]
    assert [r.id for r in runs.list(status="FAILED", started_after=first.started_at).items] == [second.id]

    # Resurrect with new options: they apply to the resurrected run.
    again = client.run(first.id).resurrect(memory_mbytes=512, run_timeout=timedelta(seconds=33), max_items=9)
    assert (again.options.memory_mbytes, again.options.timeout_secs, again.options.max_items) == (512, 33, 9)
    assert status_of(finished(client, again)) == "SUCCEEDED"

    # Every collection iterates page by page (chunk_size=1 forces one request per item).
    names = [unique("py-cov-it") for _ in range(2)]
    for name in names:
        client.datasets().get_or_create(name=name)
        client.key_value_stores().get_or_create(name=name)
        client.request_queues().get_or_create(name=name)
    for coll in (client.datasets(), client.key_value_stores(), client.request_queues()):
        listed = [s.name for s in coll.iterate(chunk_size=1)]
        assert set(names) <= set(listed), listed
        # With the unnamed ones (the runs' default storages): the client's models need a string
        # name for datasets and queues (key-value stores may have None).
        unnamed = list(coll.iterate(unnamed=True, desc=True, chunk_size=2))
        assert len(unnamed) > len(listed)
        assert {s.name for s in unnamed if s.name} == set(listed)
    assert actor_id in [a.id for a in client.actors().iterate(chunk_size=1, my=True)]
    assert {first.id, second.id} <= {r.id for r in client.runs().iterate(chunk_size=2)}
    assert len(list(client.builds().iterate(chunk_size=1))) >= 1
    task = client.tasks().create(actor_id=actor_id, name=unique("py-cov-task"))
    assert task.id in [t.id for t in client.tasks().iterate(chunk_size=1)]
    sched = client.schedules().create(cron_expression="@yearly", is_enabled=False, is_exclusive=False, name=unique("py-cov-sched"),
                                      actions=[{"type": "RUN_ACTOR", "actorId": actor_id}])
    assert sched.id in [x.id for x in client.schedules().iterate(chunk_size=1)]
    hook = client.webhooks().create(event_types=["ACTOR.RUN.ABORTED"], request_url="http://127.0.0.1:9/none",
                                    actor_id=actor_id)
    assert hook.id in [x.id for x in client.webhooks().iterate(chunk_size=1)]
    assert [x.id for x in client.webhook(hook.id).dispatches().iterate()] == []
    assert all(d.webhook_id for d in client.webhook_dispatches().iterate(chunk_size=1))
    assert client.task(task.id).publish().is_public is True
    assert client.task(task.id).unpublish().is_public is False


def test_async_clients_iterate(server, actor_id):
    async def main():
        client = server.async_client()
        actor = client.actor(actor_id)
        run = await actor.call(run_input={"mode": "ok"}, logger=None)
        last = actor.last_run(status="SUCCEEDED")
        assert (await last.get()).id == run.id
        assert [i["n"] async for i in last.iterate_dataset_items()] == [0, 1, 2]
        assert [i["n"] async for i in last.dataset().iterate_items(desc=True, limit=2)] == [2, 1]
        assert [k.key async for k in last.key_value_store().iterate_keys()] == ["INPUT", "OUTPUT"]
        rq = last.request_queue()
        await rq.batch_add_requests([{"url": "https://example.com/a", "uniqueKey": "a"}])
        assert [r.unique_key async for r in rq.iterate_requests()] == ["ok", "a"]
        assert run.id in [r.id async for r in actor.runs().iterate(chunk_size=1, desc=True)]
        assert len([q async for q in client.request_queues().iterate(unnamed=True)]) >= 1
        async with last.log().stream() as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert b"mode ok" in body
        assert (await last.log().get_as_bytes()).decode() == body.decode()
        statuses, logs = Capture(unique("py-cov-astatus")), Capture(unique("py-cov-alog"))
        watcher = await last.get_status_message_watcher(
            to_logger=statuses.logger, check_period=timedelta(milliseconds=100))
        streamed = await last.get_streamed_log(to_logger=logs.logger)
        watcher.start()
        streamed.start()
        deadline = time.time() + 60
        while not (statuses.messages and any("mode ok" in m for m in logs.messages)):
            assert time.time() < deadline, (statuses.messages, logs.messages)
            await asyncio.sleep(0.05)
        await watcher.stop()
        await streamed.stop()
        assert statuses.messages[0] == "Status: SUCCEEDED, Message: "

    asyncio.run(main())
