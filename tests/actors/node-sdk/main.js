// A small Actor on the Apify SDK for JavaScript: input, default dataset, OUTPUT record, a named
// dataset, the default request queue and status messages.
import { Actor } from 'apify';

await Actor.init();
const input = (await Actor.getInput()) ?? {};
if (input.sleepSecs) {
    // Used by the graceful-abort test: the SDK exits on the platform's `aborting` event.
    console.log('sleeping');
    await new Promise((resolve) => setTimeout(resolve, input.sleepSecs * 1000));
}
const count = input.count ?? 3;
await Actor.setStatusMessage('Starting');
await Actor.pushData(Array.from({ length: count }, (_, i) => ({ i, greeting: input.greeting ?? 'hi' })));

const named = await Actor.openDataset('troupe-js-named');
await named.pushData({ named: true });

const queue = await Actor.openRequestQueue();
for (const path of ['a', 'b', 'c', 'a']) {
    await queue.addRequest({ url: `http://127.0.0.1:9/${path}` });
}
let handled = 0;
let request;
while ((request = await queue.fetchNextRequest())) {
    await queue.markRequestHandled(request);
    handled += 1;
}

await Actor.setValue('OUTPUT', {
    ok: true,
    count,
    input,
    handled,
    atHome: Actor.isAtHome(),
    runId: process.env.ACTOR_RUN_ID,
});
await Actor.setStatusMessage(`Done: ${count} items`, { isStatusMessageTerminal: true });
await Actor.exit();
