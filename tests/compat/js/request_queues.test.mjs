// Request queues through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startServer } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });

const req = (key) => ({ url: `https://example.com/${key}`, uniqueKey: key });
const idOf = (key) => createHash('sha256').update(key).digest('base64').replace(/[+/=]/g, '').slice(0, 15);

async function newQueue(clientKey) {
    const client = server.client();
    const info = await client.requestQueues().getOrCreate(`js-rq-${Date.now()}-${Math.floor(Math.random() * 1e6)}`);
    return { client, info, rq: client.requestQueue(info.id, { clientKey }) };
}

test('every request operation', async () => {
    const { client, info, rq } = await newQueue('js-one');
    const added = await rq.addRequest({ url: 'https://example.com', uniqueKey: 'https://example.com', userData: { label: 'L' }, extra: 1 });
    assert.deepEqual(added, { requestId: 'EAaArVRs5qV39C9', wasAlreadyPresent: false, wasAlreadyHandled: false });
    assert.equal((await rq.addRequest({ url: 'https://example.com', uniqueKey: 'https://example.com' })).wasAlreadyPresent, true);

    // batchAddRequests with duplicates and forefront.
    const batch = await rq.batchAddRequests([req('a'), req('b'), req('a')]);
    assert.deepEqual(batch.processedRequests.map((p) => p.wasAlreadyPresent), [false, false, true]);
    assert.deepEqual(batch.unprocessedRequests, []);
    await rq.batchAddRequests([req('f1'), req('f2'), req('b')], { forefront: true });
    const head = await rq.listHead({ limit: 10 });
    assert.deepEqual(head.items.map((i) => i.uniqueKey), ['f2', 'f1', 'https://example.com', 'a', 'b']);
    assert.ok(head.queueModifiedAt instanceof Date);
    assert.equal(head.hadMultipleClients, false);

    const stored = await rq.getRequest('EAaArVRs5qV39C9');
    assert.equal(stored.extra, 1);
    assert.equal(stored.userData.label, 'L');
    assert.equal(await rq.getRequest('nosuchrequest00'), undefined);

    // Mark handled the way Crawlee does, then reclaim to the front.
    const handledAt = new Date('2026-08-21T10:23:31.607Z');
    const upd = await rq.updateRequest({ ...stored, handledAt });
    assert.deepEqual(upd, { requestId: stored.id, wasAlreadyPresent: true, wasAlreadyHandled: false });
    assert.equal((await rq.getRequest(stored.id)).handledAt.toISOString(), handledAt.toISOString());
    let q = await client.requestQueue(info.id).get();
    assert.deepEqual([q.totalRequestCount, q.handledRequestCount, q.pendingRequestCount], [5, 1, 4]);
    const b = await rq.getRequest(idOf('b'));
    await rq.updateRequest({ ...b, retryCount: 1 }, { forefront: true });
    assert.equal((await rq.listHead({ limit: 1 })).items[0].uniqueKey, 'b');
    assert.equal((await rq.listHead({ limit: 1 })).items[0].retryCount, 1);

    await rq.deleteRequest(idOf('a'));
    const del = await rq.batchDeleteRequests([{ uniqueKey: 'f1' }, { id: idOf('f2') }]);
    assert.equal(del.processedRequests.length, 2);
    q = await client.requestQueue(info.id).get();
    assert.deepEqual([q.totalRequestCount, q.handledRequestCount, q.pendingRequestCount], [2, 1, 1]);
    await client.requestQueue(info.id).delete();
    assert.equal(await client.requestQueue(info.id).get(), undefined);
});

test('listAndLockHead across two client keys, prolong, delete lock, unlock', async () => {
    const { client, info, rq: a } = await newQueue('js-a');
    const b = client.requestQueue(info.id, { clientKey: 'js-b' });
    await a.batchAddRequests(Array.from({ length: 6 }, (_, i) => req(`r${i}`)));
    const la = await a.listAndLockHead({ lockSecs: 60, limit: 2 });
    const lb = await b.listAndLockHead({ lockSecs: 60, limit: 2 });
    assert.deepEqual(la.items.map((i) => i.uniqueKey), ['r0', 'r1']);
    assert.deepEqual(lb.items.map((i) => i.uniqueKey), ['r2', 'r3']);
    assert.equal(la.queueHasLockedRequests, true);
    assert.equal(la.clientKey, 'js-a');
    assert.equal(lb.hadMultipleClients, true);
    assert.ok(la.items[0].lockExpiresAt instanceof Date);

    await assert.rejects(b.prolongRequestLock(la.items[0].id, { lockSecs: 30 }), (err) => err.type === 'request-handled-or-locked');
    await assert.rejects(b.deleteRequestLock(la.items[0].id), (err) => err.statusCode === 403);
    const prolonged = await a.prolongRequestLock(la.items[0].id, { lockSecs: 120 });
    assert.ok(prolonged.lockExpiresAt > la.items[0].lockExpiresAt);
    await a.deleteRequestLock(la.items[1].id, { forefront: true });
    assert.equal((await a.listHead({ limit: 1 })).items[0].uniqueKey, 'r1');

    assert.deepEqual(await b.unlockRequests(), { unlockedCount: 2 });
    const lc = await b.listAndLockHead({ lockSecs: 60, limit: 25 });
    assert.deepEqual(lc.items.map((i) => i.uniqueKey), ['r1', 'r2', 'r3', 'r4', 'r5']);
    const locked = await a.listRequests({ filter: ['locked'] });
    assert.equal(locked.items.length, 6);
    const empty = await a.listAndLockHead({ lockSecs: 60, limit: 25 });
    assert.deepEqual(empty.items, []);
    assert.equal(empty.queueHasLockedRequests, true);
});

test('listRequests paging with cursor and paginateRequests', async () => {
    const { rq } = await newQueue('js-lister');
    for (let chunk = 0; chunk < 3; chunk++) {
        await rq.batchAddRequests(Array.from({ length: 25 }, (_, i) => req(`p${chunk * 25 + i}`)));
    }
    const first = await rq.listRequests({ limit: 30 });
    assert.equal(first.items.length, 30);
    assert.ok(first.nextCursor);
    const second = await rq.listRequests({ limit: 30, cursor: first.nextCursor });
    assert.equal(second.items.length, 30);
    const third = await rq.listRequests({ limit: 30, cursor: second.nextCursor });
    assert.equal(third.items.length, 15);
    assert.ok(!third.nextCursor);
    const ids = [...first.items, ...second.items, ...third.items].map((r) => r.id);
    assert.equal(new Set(ids).size, 75);
    const all = [];
    for await (const page of rq.paginateRequests({ maxPageLimit: 20 })) all.push(...page.items);
    assert.equal(all.length, 75);
    const viaIterator = [];
    for await (const item of rq.listRequests({ limit: 40 })) viaIterator.push(item.id);
    assert.equal(viaIterator.length, 40);
    const legacy = await rq.listRequests({ limit: 10, exclusiveStartId: ids[69] });
    assert.deepEqual(legacy.items.map((r) => r.id), ids.slice(70, 75));
});
