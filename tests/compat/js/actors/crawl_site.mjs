// A Crawlee crawler run as an Actor "at home" against troupe (the test sets the environment).
// Usage: node crawl_site.mjs START_URL — follows same-host links, one dataset item per page.
import { Actor } from 'apify';
import { CheerioCrawler } from 'crawlee';

await Actor.init();
const crawler = new CheerioCrawler({
    maxRequestRetries: 2,
    requestHandlerTimeoutSecs: 20,
    async requestHandler({ request, $, enqueueLinks }) {
        await enqueueLinks({ strategy: 'same-hostname' });
        await Actor.pushData({ url: request.url, title: $('title').text() });
    },
});
await crawler.run([process.argv[2]]);
await Actor.exit();
