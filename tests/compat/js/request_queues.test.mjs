// Request queues through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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

// --- Crawlee itself (apify SDK + CheerioCrawler, locking queue), as an Actor at home ---------

const PAGES = 30;

function startSite() {
    const site = http.createServer((req, res) => {
        const m = req.url.match(/^\/page\/(\d+)$/);
        const i = m ? Number(m[1]) : -1;
        if (i < 0 || i >= PAGES) {
            res.writeHead(404).end();
            return;
        }
        const targets = [...new Set([(i + 1) % PAGES, (i * 7 + 3) % PAGES, 0])].sort((a, b) => a - b);
        const links = targets.map((t) => `<a href="/page/${t}">p${t}</a><a href="/page/${t}">again</a>`).join('');
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(`<html><head><title>Page ${i}</title></head><body>${links}</body></html>`);
    });
    return new Promise((resolve) => site.listen(0, '127.0.0.1', () => resolve(site)));
}

test('Crawlee (JS) crawls every page exactly once through the platform queue', async () => {
    const site = await startSite();
    const base = `http://127.0.0.1:${site.address().port}`;
    try {
        const client = server.client();
        const rq = await client.requestQueues().getOrCreate();
        const ds = await client.datasets().getOrCreate();
        const kv = await client.keyValueStores().getOrCreate();
        const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(APIFY_|ACTOR_|CRAWLEE_)/.test(k)));
        Object.assign(env, {
            APIFY_IS_AT_HOME: '1',
            APIFY_TOKEN: server.token,
            APIFY_API_BASE_URL: server.origin,
            APIFY_API_PUBLIC_BASE_URL: server.origin,
            ACTOR_DEFAULT_REQUEST_QUEUE_ID: rq.id,
            ACTOR_DEFAULT_DATASET_ID: ds.id,
            ACTOR_DEFAULT_KEY_VALUE_STORE_ID: kv.id,
            ACTOR_RUN_ID: 'fakeRunId00000000',
            ACTOR_ID: 'fakeActorId000000',
            APIFY_ACTOR_PRICING_INFO: '{"pricingModel":"FREE"}',
            APIFY_CHARGED_ACTOR_EVENT_COUNTS: '{}',
            APIFY_HEADLESS: '1',
            CRAWLEE_STORAGE_DIR: mkdtempSync(path.join(tmpdir(), 'troupe-crawlee-')),
        });
        const script = fileURLToPath(new URL('./actors/crawl_site.mjs', import.meta.url));
        const { code, output } = await new Promise((resolve) => {
            const child = spawn(process.execPath, [script, `${base}/page/0`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
            let output = '';
            child.stdout.on('data', (d) => { output += d; });
            child.stderr.on('data', (d) => { output += d; });
            // Only a guard against a hang: a loaded machine may be slow.
            const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
            child.on('exit', (code) => { clearTimeout(timer); resolve({ code, output }); });
        });
        assert.equal(code, 0, output.slice(-4000));
        const { items } = await client.dataset(ds.id).listItems();
        const urls = items.map((i) => i.url).sort();
        const expected = Array.from({ length: PAGES }, (_, i) => `${base}/page/${i}`).sort();
        assert.deepEqual(urls, expected, output.slice(-3000));
        const q = await client.requestQueue(rq.id).get();
        assert.deepEqual([q.totalRequestCount, q.handledRequestCount, q.pendingRequestCount], [PAGES, PAGES, 0]);
        assert.equal(q.hadMultipleClients, false, 'one crawler is one client');
    } finally {
        site.close();
    }
});
