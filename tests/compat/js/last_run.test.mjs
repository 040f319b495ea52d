// The "last run" groups and Actor tasks through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createAndBuild, finished as finishedRun, sharedFile, shellFiles, startServer } from './harness.mjs';

// A tiny Actor: reads its INPUT (`mode`), writes items, an OUTPUT record and a request into its
// default storages, then succeeds or fails as told (shared with the Python suite).
const PROGRAM = sharedFile('last_run.sh');

let server;
let client;
let actorId;

before(async () => {
    server = await startServer();
    client = server.client();
    const actor = await createAndBuild(client, shellFiles(PROGRAM), { name: 'js-last', memory: 128, timeoutSecs: 120 });
    actorId = actor.id;
});
after(async () => { await server.stop(); });

const finished = (run) => finishedRun(client, run);

test('actor(id).lastRun({status}) and its storages and log', async () => {
    const actor = client.actor(actorId);
    const ok = await finished(await actor.start({ mode: 'ok' }));
    const failed = await finished(await actor.start({ mode: 'fail' }));
    assert.equal(ok.status, 'SUCCEEDED');
    assert.equal(failed.status, 'FAILED');

    assert.equal((await actor.lastRun().get()).id, failed.id);
    assert.equal((await actor.lastRun({ status: 'FAILED' }).get()).id, failed.id);
    const last = actor.lastRun({ status: 'SUCCEEDED' });
    assert.equal((await last.get()).id, ok.id);
    const { items } = await last.dataset().listItems();
    assert.deepEqual(items.map((i) => i.n), [0, 1, 2]);
    assert.deepEqual((await last.keyValueStore().getRecord('OUTPUT')).value, { input: { mode: 'ok' }, task: null });
    const head = await last.requestQueue().listHead();
    assert.deepEqual(head.items.map((r) => r.url), ['https://example.com/ok']);
    assert.match(await last.log().get(), /mode ok task None/);
    assert.match(await actor.lastRun({ status: 'FAILED', origin: 'API' }).log().get(), /mode fail/);

    // Writes through the last run land in that run's storages.
    await last.dataset().pushItems([{ n: 99 }]);
    await last.keyValueStore().setRecord({ key: 'NOTE', value: { via: 'last' } });
    assert.equal((await client.dataset(ok.defaultDatasetId).listItems()).total, 4);
    assert.deepEqual((await client.keyValueStore(ok.defaultKeyValueStoreId).getRecord('NOTE')).value, { via: 'last' });

    // No matching run.
    assert.equal(await actor.lastRun({ status: 'ABORTED' }).get(), undefined);
    assert.equal(await actor.lastRun({ origin: 'WEB' }).get(), undefined);
    assert.equal(await actor.lastRun({ status: 'ABORTED' }).keyValueStore().getRecord('OUTPUT'), undefined);
});

test('tasks: create, get, update, input, start/call, runs, lastRun', async () => {
    const name = `js-task-${Date.now()}`;
    const task = await client.tasks().create({
        actId: actorId,
        name,
        input: { mode: 'ok', keep: 1 },
        options: { memoryMbytes: 256 },
        title: 'JS task',
    });
    assert.equal(task.actId, actorId);
    assert.equal(task.name, name);
    const tc = client.task(task.id);
    const got = await tc.get();
    assert.equal(got.title, 'JS task');
    assert.deepEqual(got.input, { mode: 'ok', keep: 1 });

    const updated = await tc.update({ title: 'Renamed', options: { timeoutSecs: 90 } });
    assert.equal(updated.title, 'Renamed');
    assert.deepEqual(updated.options, { memoryMbytes: 256, timeoutSecs: 90 });

    assert.deepEqual(await tc.getInput(), { mode: 'ok', keep: 1 });
    assert.deepEqual(await tc.updateInput({ extra: true }), { mode: 'ok', keep: 1, extra: true });
    const list = await client.tasks().list();
    assert.ok(list.items.some((t) => t.id === task.id));

    let run = await tc.start({ note: 'override' });
    assert.equal(run.actorTaskId, task.id);
    assert.equal(run.options.memoryMbytes, 256);
    assert.equal(run.options.timeoutSecs, 90);
    run = await finished(run);
    assert.equal(run.status, 'SUCCEEDED');
    const output = await client.run(run.id).keyValueStore().getRecord('OUTPUT');
    assert.deepEqual(output.value, { input: { mode: 'ok', keep: 1, extra: true, note: 'override' }, task: task.id });

    const called = await finished(await tc.call({ mode: 'fail' }));
    assert.equal(called.status, 'FAILED');

    const runs = await tc.runs().list();
    assert.equal(runs.total, 2);
    assert.deepEqual(new Set(runs.items.map((r) => r.id)), new Set([run.id, called.id]));

    assert.equal((await tc.lastRun().get()).id, called.id);
    const ok = tc.lastRun({ status: 'SUCCEEDED' });
    assert.equal((await ok.get()).id, run.id);
    assert.deepEqual((await ok.dataset().listItems()).items.map((i) => i.mode), ['ok', 'ok', 'ok']);
    assert.equal((await ok.keyValueStore().getRecord('OUTPUT')).value.task, task.id);
    assert.deepEqual((await ok.requestQueue().listHead()).items.map((r) => r.url), ['https://example.com/ok']);
    assert.match(await ok.log().get(), new RegExp(`task ${task.id}`));
    assert.equal(await tc.lastRun({ status: 'ABORTED' }).get(), undefined);

    assert.equal((await tc.webhooks().list()).total, 0);

    await tc.delete();
    assert.equal(await tc.get(), undefined);
    assert.equal((await client.run(run.id).get()).actorTaskId, task.id);
});
