// Client methods the other files do not reach (see docs/client-coverage.md): every method of the
// last-run storage clients, run lifecycle helpers (reboot, metamorph, graceful abort, delete,
// getStreamedLog), versions and env vars, build abort/delete, collection iteration and run filters.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
    startServer, createAndBuild, shellFiles, sharedFile, finished, waitForLog, eventually, Gate, unique,
} from './harness.mjs';

let server;
let client;
let actorId;

before(async () => {
    server = await startServer();
    client = server.client();
    actorId = (await createAndBuild(client, shellFiles(sharedFile('last_run.sh')), { name: 'js-cov', memory: 128 })).id;
});
after(async () => { await server?.stop(); });

const collect = async (iterable) => { const out = []; for await (const x of iterable) out.push(x); return out; };

test('lastRun: every method of its dataset, key-value store, request queue and log', async () => {
    const actor = client.actor(actorId);
    const ok = await finished(client, await actor.start({ mode: 'ok' }));
    const last = actor.lastRun({ status: 'SUCCEEDED' });

    const ds = last.dataset();
    assert.equal((await ds.get()).id, ok.defaultDatasetId);
    const page = await ds.listItems({ offset: 1, limit: 1, desc: true, fields: ['n'] });
    assert.deepEqual([page.items, page.total, page.offset, page.desc], [[{ n: 1 }], 3, 1, true]);
    assert.deepEqual((await collect(ds.listItems({ offset: 1 }))).map((i) => i.n), [1, 2]);
    assert.equal((await ds.downloadItems('csv', { fields: ['n', 'mode'], bom: false })).toString(), 'n,mode\n0,ok\n1,ok\n2,ok\n');
    const xml = (await ds.downloadItems('xml', { limit: 1, xmlRoot: 'rows', xmlRow: 'row' })).toString();
    assert.ok(xml.includes('<rows>') && xml.includes('<row><n>0</n>') && !xml.includes('<n>1</n>'), xml);
    assert.equal((await ds.getStatistics()).fieldStatistics.n.max, 2);
    await ds.pushItems([{ n: 3, mode: 'pushed' }]);
    assert.equal((await client.dataset(ok.defaultDatasetId).listItems()).total, 4);
    const renamed = unique('js-last-ds');
    assert.equal((await ds.update({ name: renamed })).name, renamed);

    const kv = last.keyValueStore();
    assert.equal((await kv.get()).id, ok.defaultKeyValueStoreId);
    assert.deepEqual((await kv.listKeys()).items.map((k) => k.key), ['INPUT', 'OUTPUT']);
    assert.deepEqual((await kv.listKeys({ limit: 1, exclusiveStartKey: 'INPUT' })).items.map((k) => k.key), ['OUTPUT']);
    assert.deepEqual((await collect(kv.listKeys({ prefix: 'OUT' }))).map((k) => k.key), ['OUTPUT']);
    assert.deepEqual([await kv.recordExists('OUTPUT'), await kv.recordExists('NOPE')], [true, false]);
    const streamed = await kv.getRecord('INPUT', { stream: true });
    assert.deepEqual(JSON.parse(Buffer.concat(await collect(streamed.value)).toString()), { mode: 'ok' });
    const buffered = await kv.getRecord('OUTPUT', { buffer: true });
    assert.deepEqual(JSON.parse(buffered.value.toString()), { input: { mode: 'ok' }, task: null });
    // Over 1 KiB, so the client sends it brotli-compressed.
    const big = 'x'.repeat(5000);
    await kv.setRecord({ key: 'BIG', value: big, contentType: 'text/plain' });
    assert.equal((await client.keyValueStore(ok.defaultKeyValueStoreId).getRecord('BIG')).value, big);
    await kv.deleteRecord('BIG');
    assert.equal(await kv.getRecord('BIG'), undefined);

    const rq = last.requestQueue();
    assert.equal((await rq.get()).id, ok.defaultRequestQueueId);
    const added = await rq.addRequest({ url: 'https://example.com/2', uniqueKey: 'two' });
    const got = await rq.getRequest(added.requestId);
    await rq.updateRequest({ ...got, userData: { label: 'x' } });
    assert.deepEqual((await rq.getRequest(added.requestId)).userData, { label: 'x' });
    // 27 requests: a body over 1 KiB (compressed by the client).
    const batch = await rq.batchAddRequests(Array.from({ length: 27 }, (_, i) => ({ url: `https://example.com/b${i}`, uniqueKey: `b${i}` })));
    assert.equal(batch.processedRequests.length, 27);
    const deleted = await rq.batchDeleteRequests(Array.from({ length: 25 }, (_, i) => ({ uniqueKey: `b${i + 2}` })));
    assert.equal(deleted.processedRequests.length, 25);
    // (Listed in id order, not insertion order.)
    assert.deepEqual((await rq.listRequests({ limit: 10 })).items.map((r) => r.uniqueKey).sort(), ['b0', 'b1', 'ok', 'two']);
    const pages = await collect(rq.paginateRequests({ maxPageLimit: 3 }));
    assert.deepEqual(pages.flatMap((p) => p.items.map((r) => r.uniqueKey)).sort(), ['b0', 'b1', 'ok', 'two']);
    const locked = await rq.listAndLockHead({ lockSecs: 60, limit: 2 });
    assert.deepEqual(locked.items.map((r) => r.uniqueKey), ['ok', 'two']);
    // Requests locked (by anyone) are listed after the unlocked ones (SDK-CONTRACT).
    assert.deepEqual((await rq.listHead()).items.map((r) => r.uniqueKey), ['b0', 'b1', 'ok', 'two']);
    const prolonged = await rq.prolongRequestLock(locked.items[0].id, { lockSecs: 600 });
    assert.ok(new Date(prolonged.lockExpiresAt) > new Date(locked.items[0].lockExpiresAt));
    await rq.deleteRequestLock(locked.items[0].id, { forefront: true });
    assert.deepEqual((await rq.listHead()).items.map((r) => r.uniqueKey), ['ok', 'b0', 'b1', 'two']);
    assert.equal((await rq.unlockRequests()).unlockedCount, 1);
    await rq.deleteRequest(added.requestId);
    assert.equal(await rq.getRequest(added.requestId), undefined);

    const text = await last.log().get();
    assert.ok(text.includes('mode ok task None'), text);
    assert.equal(Buffer.concat(await collect(await last.log().stream())).toString(), text);

    const updated = await last.update({ statusMessage: 'checked', isStatusMessageTerminal: true });
    assert.equal(updated.id, ok.id);
    assert.equal((await last.waitForFinish()).statusMessage, 'checked');
});

test('reboot, metamorph, getStreamedLog, graceful abort, delete, generalAccess', async () => {
    const gate = new Gate();
    try {
        const looper = await createAndBuild(client, shellFiles(`echo start $ACTOR_INPUT_KEY; ${gate.wait()}; echo done`), { name: 'js-cov-loop', memory: 128 });
        const target = await createAndBuild(client, shellFiles('echo "target $ACTOR_INPUT_KEY"'), { name: 'js-cov-target', memory: 128 });

        const run = await client.actor(looper.id).start();
        await waitForLog(client, run.id, 'start INPUT');
        assert.equal((await client.run(run.id).reboot()).status, 'RUNNING');
        await eventually('the process started again', async () => ((await client.run(run.id).log().get()) ?? '').split('start INPUT').length === 3);
        assert.equal((await client.run(run.id).metamorph(target.id, { to: 'target' })).id, run.id);
        const done = await finished(client, run);
        assert.equal(done.status, 'SUCCEEDED');
        assert.deepEqual(done.metamorphs.map((m) => m.actorId), [target.id]);
        const key = done.metamorphs[0].inputKey;
        assert.ok((await client.run(run.id).log().get()).includes(`target ${key}`));
        assert.deepEqual((await client.run(run.id).keyValueStore().getRecord(key)).value, { to: 'target' });

        // getStreamedLog follows the run's log to the end.
        const second = await client.actor(looper.id).start();
        await waitForLog(client, second.id, 'start INPUT');
        const messages = [];
        const streamedLog = await client.run(second.id).getStreamedLog({ toLog: { info: (m) => messages.push(m) } });
        streamedLog.start();
        gate.open();
        await finished(client, second);
        await eventually('the end of the log redirected', () => messages.some((m) => m.includes('The run ended')));
        await streamedLog.stop();
        assert.ok(messages.some((m) => m.includes('start INPUT')) && messages.some((m) => m.endsWith(' done')), messages.join('\n'));

        const sleeper = await createAndBuild(client, shellFiles('echo start; sleep 300'), { name: 'js-cov-abort', memory: 128 });
        const third = await client.actor(sleeper.id).start();
        await waitForLog(client, third.id, 'start');
        // (A shell program ignores the graceful abort's event; a plain abort then kills it.)
        assert.equal((await client.run(third.id).abort({ gracefully: true })).status, 'ABORTING');
        await waitForLog(client, third.id, 'Aborting gracefully');
        assert.ok(['ABORTING', 'ABORTED'].includes((await client.run(third.id).abort()).status));
        assert.equal((await finished(client, third)).status, 'ABORTED');
        assert.equal((await client.run(third.id).update({ generalAccess: 'RESTRICTED' })).generalAccess, 'RESTRICTED');
        await client.run(third.id).delete();
        assert.equal(await client.run(third.id).get(), undefined);
    } finally {
        gate.open();
        gate.close();
    }
});

test('versions, env vars, builds abort/delete, actor update/delete', async () => {
    const actor = await createAndBuild(client, shellFiles('echo hi'), { name: 'js-cov-crud', memory: 128 });
    const ac = client.actor(actor.id);
    const created = await ac.versions().create({ versionNumber: '0.2', sourceType: 'SOURCE_FILES', buildTag: 'beta', sourceFiles: [{ name: 'main.sh', format: 'TEXT', content: 'echo two' }] });
    assert.equal(created.buildTag, 'beta');
    assert.equal((await ac.version('0.2').update({ buildTag: 'next' })).buildTag, 'next');
    assert.deepEqual((await ac.versions().list()).items.map((v) => v.versionNumber).sort(), ['0.1', '0.2']);
    const env = ac.version('0.2').envVars();
    assert.equal((await env.create({ name: 'PLAIN', value: 'one' })).value, 'one');
    const secret = await env.create({ name: 'HIDDEN', value: 's3cret', isSecret: true });
    assert.equal(secret.value, undefined);
    assert.deepEqual(Object.fromEntries((await env.list()).items.map((e) => [e.name, e.value])), { PLAIN: 'one', HIDDEN: undefined });
    assert.equal((await ac.version('0.2').envVar('PLAIN').update({ name: 'PLAIN', value: 'two' })).value, 'two');
    assert.equal((await ac.version('0.2').envVar('PLAIN').get()).value, 'two');
    await ac.version('0.2').envVar('PLAIN').delete();
    assert.equal(await ac.version('0.2').envVar('PLAIN').get(), undefined);
    await ac.version('0.2').delete();
    assert.equal(await ac.version('0.2').get(), undefined);

    const second = await client.build((await ac.build('0.1')).id).waitForFinish();
    const ids = (await collect(ac.builds().list({ desc: true }))).map((b) => b.id);
    assert.equal(ids[0], second.id);
    assert.equal(ids.length, 2);
    assert.equal((await client.build(second.id).abort()).status, 'SUCCEEDED');
    await client.build(ids[1]).delete();
    assert.equal(await client.build(ids[1]).get(), undefined);

    const updated = await ac.update({ title: 'Coverage', description: 'every method' });
    assert.deepEqual([updated.title, updated.description], ['Coverage', 'every method']);
    await ac.delete();
    assert.equal(await ac.get(), undefined);
});

test('run filters (startedAfter/startedBefore), resurrect options, collections iterated', async () => {
    const actor = client.actor(actorId);
    const first = await finished(client, await actor.start({ mode: 'ok' }, { maxItems: 5, memory: 256 }));
    await new Promise((r) => setTimeout(r, 10));
    const second = await finished(client, await actor.start({ mode: 'fail' }));
    assert.equal(first.options.maxItems, 5);
    const runs = actor.runs();
    assert.deepEqual((await runs.list({ startedAfter: second.startedAt })).items.map((r) => r.id), [second.id]);
    const early = (await runs.list({ startedBefore: first.startedAt })).items.map((r) => r.id);
    assert.ok(early.includes(first.id) && !early.includes(second.id));
    const both = await client.runs().list({ startedAfter: first.startedAt, startedBefore: second.startedAt, status: ['SUCCEEDED', 'FAILED'], desc: true });
    assert.deepEqual(both.items.map((r) => r.id), [second.id, first.id]);

    const again = await client.run(first.id).resurrect({ memory: 512, timeout: 33, maxItems: 9 });
    assert.deepEqual([again.options.memoryMbytes, again.options.timeoutSecs, again.options.maxItems], [512, 33, 9]);
    assert.equal((await finished(client, again)).status, 'SUCCEEDED');

    const name = unique('js-cov-it');
    await client.datasets().getOrCreate(name);
    await client.keyValueStores().getOrCreate(name);
    await client.requestQueues().getOrCreate(name);
    for (const coll of [client.datasets(), client.keyValueStores(), client.requestQueues()]) {
        assert.ok((await collect(coll.list())).some((s) => s.name === name));
        const unnamed = await collect(coll.list({ unnamed: true, desc: true }));
        assert.ok(unnamed.length >= 2 && unnamed.every((s) => typeof s.name === 'string' || s.name === null));
    }
    assert.ok((await collect(client.actors().list({ my: true }))).some((a) => a.id === actorId));
    const all = (await collect(client.runs().list({ offset: 0 }))).map((r) => r.id);
    assert.ok(all.includes(first.id) && all.includes(second.id));
    assert.ok((await collect(client.builds().list())).length >= 1);
});
