// Crawls a site from `startUrl` (same host only) and stores each page's URL and title.
import { Actor } from 'apify';
import { CheerioCrawler } from 'crawlee';

await Actor.init();
const { startUrl, maxRequests = 50 } = (await Actor.getInput()) ?? {};
const crawler = new CheerioCrawler({
    maxRequestsPerCrawl: maxRequests,
    maxConcurrency: 4,
    async requestHandler({ request, $, enqueueLinks }) {
        await Actor.pushData({ url: request.loadedUrl ?? request.url, title: $('title').text() });
        await enqueueLinks({ strategy: 'same-hostname' });
    },
});
await crawler.run([startUrl]);
await Actor.setValue('OUTPUT', { done: true });
await Actor.exit();
