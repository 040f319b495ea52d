// Datasets through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });

test('getOrCreate, pushItems and listItems', async () => {
    const client = server.client();
    const ds = await client.datasets().getOrCreate(`js-ds-${Date.now()}`);
    const again = await client.datasets().getOrCreate(ds.name);
    assert.equal(again.id, ds.id);
    await client.dataset(ds.id).pushItems(Array.from({ length: 25 }, (_, n) => ({ n })));
    const page = await client.dataset(ds.id).listItems({ offset: 5, limit: 10 });
    assert.equal(page.total, 25);
    assert.equal(page.count, 10);
    assert.deepEqual(page.items.map((i) => i.n), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
});
