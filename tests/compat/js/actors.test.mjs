// Actors, builds and runs through the official JavaScript apify-client: the SDK test Actors
// (tests/actors) built and run by troupe, plus start/wait/abort/log/resurrect on tiny shell Actors.
// pip/npm caches and installed dependencies are shared through TROUPE_CACHE_DIR.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { createAndBuild, finished, shellFiles, startServer, unique, waitForLog, ROOT } from './harness.mjs';

const ACTORS = path.join(ROOT, 'tests', 'actors');
const CACHE = path.join(ROOT, 'target', 'troupe-test-cache');
const SKIP = new Set(['node_modules', '.venv', '__pycache__', 'storage']);

let server;
before(async () => {
    mkdirSync(CACHE, { recursive: true });
    server = await startServer({ TROUPE_CACHE_DIR: CACHE });
});
after(async () => { await server.stop(); });

function sourceFiles(folder, rel = '') {
    const out = [];
    for (const name of readdirSync(path.join(folder, rel)).sort()) {
        const relPath = rel ? `${rel}/${name}` : name;
        const full = path.join(folder, relPath);
        if (statSync(full).isDirectory()) {
            if (!SKIP.has(name)) out.push(...sourceFiles(folder, relPath));
            continue;
        }
        out.push({ name: relPath, format: 'BASE64', content: readFileSync(full).toString('base64') });
    }
    return out;
}

test('the JS SDK Actor runs unchanged (call, dataset, OUTPUT, named dataset, queue, status)', async () => {
    const client = server.client();
    const actor = await createAndBuild(client, sourceFiles(path.join(ACTORS, 'node-sdk')));
    const run = await client.actor(actor.id).call({ count: 3, greeting: 'hello' }, { log: null });
    const log = await client.run(run.id).log().get();
    assert.equal(run.status, 'SUCCEEDED', log);
    assert.equal(run.exitCode, 0);
    const { items } = await client.dataset(run.defaultDatasetId).listItems();
    assert.deepEqual(items, [0, 1, 2].map((i) => ({ i, greeting: 'hello' })));
    const output = await client.keyValueStore(run.defaultKeyValueStoreId).getRecord('OUTPUT');
    assert.equal(output.value.ok, true);
    assert.equal(output.value.atHome, true);
    assert.equal(output.value.handled, 3);
    assert.equal(output.value.runId, run.id);
    const named = await client.datasets().getOrCreate('troupe-js-named');
    assert.ok((await client.dataset(named.id).listItems()).items.some((i) => i.named === true));
    const finished = await client.run(run.id).get();
    assert.equal(finished.statusMessage, 'Done: 3 items');
    for (const line of log.trim().split('\n')) {
        assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
    }
    // The same Actor through the legacy /v2/acts prefix and by name.
    const byName = await client.actor(`troupe/${actor.name}`).get();
    assert.equal(byName.id, actor.id);
});

test('the Python SDK Actor runs unchanged', async () => {
    const client = server.client();
    const actor = await createAndBuild(client, sourceFiles(path.join(ACTORS, 'python-sdk')));
    const run = await client.actor(actor.id).call({ count: 2, greeting: 'hello' }, { log: null });
    assert.equal(run.status, 'SUCCEEDED', await client.run(run.id).log().get());
    const { items } = await client.dataset(run.defaultDatasetId).listItems();
    assert.equal(items.length, 2);
    const output = await client.keyValueStore(run.defaultKeyValueStoreId).getRecord('OUTPUT');
    assert.deepEqual(output.value.input, { count: 2, greeting: 'hello' });
});

test('start, waitForFinish, abort, log, resurrect, lastRun', async () => {
    const client = server.client();
    const actor = await createAndBuild(client, shellFiles('echo started; while true; do echo tick; sleep 0.2; done'), { memory: 128 });
    const run = await client.actor(actor.id).start(undefined, { memory: 128 });
    assert.ok(['READY', 'RUNNING'].includes(run.status));
    await waitForLog(client, run.id, 'tick');
    // A short wait returns the run still going (it never ends by itself).
    const t = Date.now();
    const still = await client.run(run.id).waitForFinish({ waitSecs: 1 });
    assert.equal(still.status, 'RUNNING');
    assert.ok(Date.now() - t < 30_000);
    const aborted = await client.run(run.id).abort();
    assert.ok(['ABORTING', 'ABORTED'].includes(aborted.status));
    const done = await finished(client, run);
    assert.equal(done.status, 'ABORTED');
    assert.match(await client.run(run.id).log().get(), /started/);
    assert.equal((await client.actor(actor.id).lastRun({ status: 'ABORTED' }).get()).id, run.id);
    const runs = await client.actor(actor.id).runs().list({ desc: true });
    assert.equal(runs.items[0].id, run.id);

    const once = await createAndBuild(client, shellFiles('echo once'), { memory: 128 });
    const first = await client.actor(once.id).call(undefined, { log: null });
    assert.equal(first.status, 'SUCCEEDED');
    await client.run(first.id).resurrect();
    const again = await finished(client, first);
    assert.equal(again.status, 'SUCCEEDED');
    assert.equal((await client.run(first.id).log().get()).match(/ once/g).length, 2);
});

test('bad input is refused and starts nothing', async () => {
    const client = server.client();
    await assert.rejects(
        client.actors().create({
            name: unique('bad'),
            versions: [{ versionNumber: '0.1', sourceType: 'SOURCE_FILES', sourceFiles: [{ name: '/etc/x', format: 'TEXT', content: 'x' }] }],
        }),
        (err) => err.statusCode === 400 && err.type === 'invalid-input',
    );
    assert.equal(await client.actor('no-such-actor').get(), undefined);
    const actor = await createAndBuild(client, shellFiles('exit 0'), { memory: 128 });
    await assert.rejects(client.actor(actor.id).start(undefined, { build: 'nope' }), (err) => err.type === 'unknown-build-tag');
    await assert.rejects(client.actor(actor.id).start(undefined, { memory: 100 }), (err) => err.statusCode === 400);
    assert.equal((await client.actor(actor.id).runs().list()).total, 0);
});
