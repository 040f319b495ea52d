// The P2 operations troupe answers (input validation, build OpenAPI documents, charges, account
// limits and usage, the store) through the official JavaScript apify-client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, createAndBuild } from './harness.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server.stop(); });

const INPUT_SCHEMA = {
    title: 'In', type: 'object', schemaVersion: 1,
    properties: {
        url: { title: 'URL', type: 'string', editor: 'textfield', description: 'Where' },
        pages: { title: 'Pages', type: 'integer', minimum: 1, maximum: 10, description: 'How many' },
    },
    required: ['url'],
};

async function schemaActor(client, script = 'exit 0') {
    const definition = { actorSpecification: 1, startCommand: 'sh main.sh', input: INPUT_SCHEMA };
    return createAndBuild(client, [
        { name: '.actor/actor.json', format: 'TEXT', content: JSON.stringify(definition) },
        { name: 'main.sh', format: 'TEXT', content: script },
    ], { name: `schema-${Date.now()}`, memory: 128 });
}

test('validateInput, getOpenApiDefinition', async () => {
    const client = server.client();
    const actor = await schemaActor(client);
    assert.equal(await client.actor(actor.id).validateInput({ url: 'https://example.com', pages: 2 }), true);
    await assert.rejects(client.actor(actor.id).validateInput({ pages: 2 }),
        (err) => err.statusCode === 400 && err.type === 'invalid-input');
    await assert.rejects(client.actor(actor.id).validateInput({ url: 'x', pages: 0 }),
        (err) => err.statusCode === 400 && err.type === 'invalid-input');
    const build = await client.actor(actor.id).defaultBuild();
    const doc = await client.build((await build.get()).id).getOpenApiDefinition();
    assert.deepEqual(doc.components.schemas.inputSchema.required, ['url']);
    assert.ok(Object.keys(doc.paths).some((p) => p.endsWith('/runs')));
});

test('charge is refused for free Actors', async () => {
    const client = server.client();
    const actor = await schemaActor(client, 'sleep 300');
    const run = await client.actor(actor.id).start({ url: 'x' });
    try {
        await assert.rejects(client.run(run.id).charge({ eventName: 'PAGE', count: 1 }),
            (err) => err.statusCode === 400 && err.type === 'cannot-charge-non-pay-per-event-actor');
    } finally {
        await client.run(run.id).abort();
    }
});

test('limits, monthlyUsage, updateLimits, store', async () => {
    const client = server.client();
    const limits = await client.user().limits();
    assert.equal(limits.limits.maxMonthlyUsageUsd, 0);
    assert.ok(limits.current.actorCount >= 0);
    const usage = await client.user().monthlyUsage();
    assert.deepEqual(usage.dailyServiceUsages, []);
    await assert.rejects(client.user().updateLimits({ maxMonthlyUsageUsd: 5 }),
        (err) => err.statusCode === 501 && err.type === 'not-implemented');
    const name = `public-${Date.now()}`;
    const pub = await client.actors().create({ name, isPublic: true });
    await client.actors().create({ name: `private-${Date.now()}` });
    const page = await client.store().list({ search: name });
    assert.deepEqual(page.items.map((a) => a.id), [pub.id]);
});
