// Users through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });

test('user().get() and the public profile by id and username', async () => {
    const client = server.client();
    const me = await client.user().get();
    assert.equal(me.username, 'troupe');
    assert.equal(me.id.length, 17);
    assert.equal((await client.user(me.id).get()).username, 'troupe');
    assert.equal((await client.user('troupe').get()).username, 'troupe');
});
