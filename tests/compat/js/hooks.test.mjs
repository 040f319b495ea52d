// Webhooks, webhook dispatches and schedules through the official JavaScript apify-client. A
// small HTTP receiver in the test records what troupe POSTs; background work is awaited by
// polling with a deadline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createAndBuild, eventually, shellFiles, startServer, unique } from './harness.mjs';

let server;
let receiver;
const received = [];

before(async () => {
    server = await startServer();
    receiver = http.createServer((req, res) => {
        let body = '';
        req.on('data', (chunk) => { body += chunk; });
        req.on('end', () => {
            received.push({ path: req.url, headers: req.headers, body: JSON.parse(body || 'null') });
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok');
        });
    });
    await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
});
after(async () => {
    await server.stop();
    await new Promise((resolve) => receiver.close(resolve));
});

const receiverUrl = (p) => `http://127.0.0.1:${receiver.address().port}${p}`;
const on = (p) => received.filter((r) => r.path === p);
const poll = (probe) => eventually('a webhook call', probe);
const shellActor = (client, script) => createAndBuild(client, shellFiles(script), { name: 'js-hooks', memory: 128, timeoutSecs: 120 });

test('webhooks: create, get, update, list, dispatches, test, delete', async () => {
    const client = server.client();
    const actor = await shellActor(client, 'exit 0');
    const created = await client.webhooks().create({
        eventTypes: ['ACTOR.RUN.SUCCEEDED'],
        condition: { actorId: actor.id },
        requestUrl: receiverUrl('/js'),
        idempotencyKey: unique('key'),
        headersTemplate: '{"X-From": "js"}',
    });
    assert.equal(created.id.length, 17);
    assert.deepEqual(created.condition, { actorId: actor.id });
    assert.ok(created.createdAt instanceof Date);
    const webhook = client.webhook(created.id);
    assert.equal((await webhook.get()).id, created.id);
    const updated = await webhook.update({ description: 'from js' });
    assert.equal(updated.description, 'from js');
    assert.equal(updated.requestUrl, receiverUrl('/js'));
    assert.ok((await client.webhooks().list()).items.some((w) => w.id === created.id));
    assert.deepEqual((await client.actor(actor.id).webhooks().list()).items.map((w) => w.id), [created.id]);

    const run = await client.actor(actor.id).call(undefined, { log: null });
    assert.equal(run.status, 'SUCCEEDED');
    const [got] = await poll(() => on('/js').length && on('/js'));
    assert.equal(got.body.eventType, 'ACTOR.RUN.SUCCEEDED');
    assert.equal(got.body.resource.id, run.id);
    assert.equal(got.headers['x-from'], 'js');
    const dispatchId = got.headers['x-apify-webhook-dispatch-id'];
    const dispatch = await poll(async () => {
        const d = await client.webhookDispatch(dispatchId).get();
        return d.status === 'SUCCEEDED' && d;
    });
    assert.equal(dispatch.webhookId, created.id);
    assert.equal(dispatch.calls[0].responseStatus, 200);
    assert.equal(dispatch.calls[0].responseBody, 'ok');
    assert.ok((await webhook.dispatches().list()).items.some((d) => d.id === dispatchId));
    assert.ok((await client.webhookDispatches().list()).items.some((d) => d.id === dispatchId));

    const tested = await webhook.test();
    assert.equal(tested.eventType, 'TEST');
    await poll(() => on('/js').length >= 2);

    await assert.rejects(
        client.webhooks().create({ eventTypes: ['NOPE'], condition: { actorId: actor.id }, requestUrl: receiverUrl('/x') }),
        (err) => err.statusCode === 400 && err.type === 'invalid-input',
    );
    await webhook.delete();
    assert.equal(await webhook.get(), undefined);
    assert.equal(await client.webhookDispatch('nope').get(), undefined);
});

test('ad-hoc webhooks passed when starting a run', async () => {
    const client = server.client();
    const actor = await shellActor(client, 'exit 0');
    const run = await client.actor(actor.id).call(undefined, {
        log: null,
        webhooks: [{ eventTypes: ['ACTOR.RUN.SUCCEEDED'], requestUrl: receiverUrl('/adhoc') }],
    });
    const [got] = await poll(() => on('/adhoc').length && on('/adhoc'));
    assert.equal(got.body.resource.id, run.id);
});

test('schedules: create, get, update, list, log, delete', async () => {
    const client = server.client();
    const actor = await shellActor(client, 'exit 0');
    const created = await client.schedules().create({
        name: unique('js-sched'),
        cronExpression: '0 */2 * * *',
        timezone: 'UTC',
        isEnabled: true,
        isExclusive: true,
        actions: [{ type: 'RUN_ACTOR', actorId: actor.id, runOptions: { timeoutSecs: 60 } }],
    });
    assert.equal(created.cronExpression, '0 */2 * * *');
    assert.ok(created.nextRunAt instanceof Date);
    assert.equal(created.actions[0].actorId, actor.id);
    const schedule = client.schedule(created.id);
    assert.equal((await schedule.get()).id, created.id);
    const updated = await schedule.update({ isEnabled: false, title: 'Paused' });
    assert.equal(updated.isEnabled, false);
    assert.equal(updated.title, 'Paused');
    assert.ok((await client.schedules().list()).items.some((s) => s.id === created.id));
    assert.deepEqual(await schedule.getLog(), []);
    await assert.rejects(
        client.schedules().create({ cronExpression: '99 * * * *', isEnabled: true, isExclusive: false }),
        (err) => err.statusCode === 400 && err.type === 'cron-expression-invalid',
    );
    await schedule.delete();
    assert.equal(await schedule.get(), undefined);
});
