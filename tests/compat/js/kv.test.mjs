// Key-value stores through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { ApifyClient } from 'apify-client';
import { startServer } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });

let counter = 0;
async function newStore(client = server.client()) {
    counter += 1;
    const store = await client.keyValueStores().getOrCreate(`js-kv-${Date.now()}-${counter}`);
    return { store, kv: client.keyValueStore(store.id) };
}

const byteOrder = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

test('JSON, text and binary records round-trip with their content types', async () => {
    const { kv } = await newStore();
    const value = { hello: 'world', n: [1, 2, 3], nested: { x: null } };
    await kv.setRecord({ key: 'json', value });
    const big = { items: Array.from({ length: 500 }, (_, i) => ({ i, s: 'x'.repeat(20) })) }; // sent compressed
    await kv.setRecord({ key: 'big-json', value: big });
    await kv.setRecord({ key: 'text', value: 'héllo wörld', contentType: 'text/plain; charset=utf-8' });
    const binary = Buffer.alloc(10240, 0).map((_, i) => i % 256);
    await kv.setRecord({ key: 'bin', value: binary, contentType: 'application/octet-stream' });
    await kv.setRecord({ key: 'png', value: binary, contentType: 'image/png' });

    let got = await kv.getRecord('json');
    assert.deepEqual(got.value, value);
    assert.match(got.contentType, /^application\/json/);
    assert.deepEqual((await kv.getRecord('big-json')).value, big);
    got = await kv.getRecord('text');
    assert.equal(got.value, 'héllo wörld');
    assert.equal(got.contentType, 'text/plain; charset=utf-8');
    got = await kv.getRecord('bin');
    assert.ok(Buffer.isBuffer(got.value));
    assert.ok(got.value.equals(binary));
    assert.equal(got.contentType, 'application/octet-stream');
    got = await kv.getRecord('png', { buffer: true });
    assert.ok(got.value.equals(binary));
    assert.equal(got.contentType, 'image/png');
    // A record stored gzip-encoded (uploaded with Content-Encoding: gzip) is served encoded and
    // decoded by the client.
    const { store: raw } = await newStore();
    const put = await fetch(`${server.api}/key-value-stores/${raw.id}/records/gz`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gzipSync(JSON.stringify(value)),
    });
    assert.equal(put.status, 201);
    got = await server.client().keyValueStore(raw.id).getRecord('gz');
    assert.deepEqual(got.value, value);
    assert.equal(got.contentType, 'application/json');
});

test('missing records, recordExists and deleteRecord', async () => {
    const { kv } = await newStore();
    assert.equal(await kv.getRecord('nope'), undefined);
    assert.equal(await kv.recordExists('nope'), false);
    await kv.setRecord({ key: 'yes', value: { a: 1 } });
    assert.equal(await kv.recordExists('yes'), true);
    await kv.deleteRecord('yes');
    assert.equal(await kv.recordExists('yes'), false);
    await kv.deleteRecord('yes'); // deleting a missing key is not an error
    assert.equal(await server.client().keyValueStore('NoSuchStore12345x').getRecord('x'), undefined);
});

test('keys paging with limit, exclusiveStartKey and prefix over more than 1000 keys', async () => {
    const { kv } = await newStore();
    const keys = Array.from({ length: 1100 }, (_, i) => `k-${String(i).padStart(5, '0')}`)
        .concat(['A', 'Z', 'a', 'z', 'k', 'k-', 'kz', '(x)', '0']);
    for (let i = 0; i < keys.length; i += 20) {
        await Promise.all(keys.slice(i, i + 20).map((key) => kv.setRecord({ key, value: key, contentType: 'text/plain' })));
    }
    const expected = [...keys].sort(byteOrder);

    const first = await kv.listKeys();
    assert.equal(first.count, 1000);
    assert.equal(first.limit, 1000);
    assert.equal(first.isTruncated, true);
    assert.equal(first.nextExclusiveStartKey, expected[999]);
    assert.deepEqual(first.items.map((i) => i.key), expected.slice(0, 1000));
    assert.equal(first.items[0].size, Buffer.byteLength(expected[0]));
    assert.match(first.items[0].recordPublicUrl, /^http.*signature=/);
    const second = await kv.listKeys({ exclusiveStartKey: first.nextExclusiveStartKey });
    assert.deepEqual(second.items.map((i) => i.key), expected.slice(1000));
    assert.equal(second.isTruncated, false);
    assert.equal(second.nextExclusiveStartKey, null);

    const page = await kv.listKeys({ limit: 7, prefix: 'k-01', exclusiveStartKey: 'k-01003' });
    assert.deepEqual(page.items.map((i) => i.key), Array.from({ length: 7 }, (_, i) => `k-0${1004 + i}`));
    assert.equal(page.isTruncated, true);
    assert.equal(page.nextExclusiveStartKey, 'k-01010');

    // Iterate all keys the way the JS client and Crawlee do: until nextExclusiveStartKey is null.
    const all = [];
    let exclusiveStartKey;
    let pages = 0;
    for (;;) {
        const result = await kv.listKeys({ limit: 250, exclusiveStartKey });
        all.push(...result.items.map((i) => i.key));
        pages += 1;
        assert.ok(pages < 20, 'paging does not end');
        if (result.nextExclusiveStartKey === null) break;
        exclusiveStartKey = result.nextExclusiveStartKey;
    }
    assert.deepEqual(all, expected);
    // The client's own async iterator.
    const iterated = [];
    for await (const item of kv.listKeys({ prefix: 'k-00' })) iterated.push(item.key);
    assert.equal(iterated.length, 1000);
});

test('a large record streams both ways', async () => {
    const { kv } = await newStore();
    const chunk = createHash('sha256').update('seed').digest();
    const chunkMiB = Buffer.concat(Array(32768).fill(chunk));
    const parts = 24;
    const expected = createHash('sha256');
    for (let i = 0; i < parts; i += 1) expected.update(chunkMiB);
    await kv.setRecord(
        { key: 'large', value: Readable.from((function* gen() { for (let i = 0; i < parts; i += 1) yield chunkMiB; })()), contentType: 'application/octet-stream' },
    );
    const record = await kv.getRecord('large', { stream: true });
    assert.equal(record.contentType, 'application/octet-stream');
    const digest = createHash('sha256');
    let size = 0;
    for await (const piece of record.value) {
        digest.update(piece);
        size += piece.length;
    }
    assert.equal(size, parts * chunkMiB.length);
    assert.equal(digest.digest('hex'), expected.digest('hex'));
});

test('public URLs open without a token', async () => {
    const client = new ApifyClient({ token: server.token, baseUrl: server.origin, publicBaseUrl: server.origin, maxRetries: 0 });
    const { store, kv } = await newStore(client);
    assert.ok(store.urlSigningSecretKey);
    await kv.setRecord({ key: 'INPUT', value: { public: true } });
    await kv.setRecord({ key: 'other', value: 'x' });
    const url = await kv.getRecordPublicUrl('INPUT');
    assert.match(url, /signature=/);
    let response = await fetch(url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(await response.json(), { public: true });
    response = await fetch(url.split('?')[0]);
    assert.equal(response.status, 401);
    assert.equal((await response.json()).error.type, 'token-not-provided');

    for (const options of [{}, { expiresInSecs: 300 }, { prefix: 'IN', limit: 10 }]) {
        const keysUrl = await kv.createKeysPublicUrl(options);
        assert.match(keysUrl, /signature=/);
        response = await fetch(keysUrl);
        assert.equal(response.status, 200, keysUrl);
        const { data } = await response.json();
        const item = data.items.find((i) => i.key === 'INPUT');
        assert.ok(item);
        response = await fetch(item.recordPublicUrl);
        assert.equal(response.status, 200);
        assert.deepEqual(await response.json(), { public: true });
    }
    response = await fetch(`${server.api}/key-value-stores/${store.id}/keys`);
    assert.equal(response.status, 401);
});
