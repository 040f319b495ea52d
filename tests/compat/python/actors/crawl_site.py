"""A Crawlee crawler run as an Actor "at home" against troupe (the test sets the environment).

Usage: python crawl_site.py START_URL single|shared
Follows every same-site link; pushes one dataset item per handled page.
"""

import asyncio
import re
import sys
from datetime import timedelta
from urllib.parse import urljoin

from apify import Actor
from apify.storage_clients import ApifyStorageClient, SmartApifyStorageClient
from apify.storage_clients._file_system import ApifyFileSystemStorageClient
from crawlee import ConcurrencySettings, service_locator
from crawlee.crawlers import HttpCrawler, HttpCrawlingContext


async def main(start_url: str, access: str) -> None:
    service_locator.set_storage_client(
        SmartApifyStorageClient(
            local_storage_client=ApifyFileSystemStorageClient(),
            cloud_storage_client=ApifyStorageClient(request_queue_access=access),
        )
    )
    # apify 4.1.0's shared client has a client-side race: when `list_and_lock_head` returns a request
    # while this process's own batch add of it is still in flight, the add's reply overwrites the
    # cached (hydrated) entry, the request disappears from the local head and the crawler waits for
    # ever. troupe answers fast enough to hit it with parallel workers, so shared mode runs one.
    concurrency = ConcurrencySettings(max_concurrency=1, desired_concurrency=1) if access == 'shared' else None
    async with Actor:
        crawler = HttpCrawler(
            concurrency_settings=concurrency,
            max_request_retries=2,
            request_handler_timeout=timedelta(seconds=20),
        )

        @crawler.router.default_handler
        async def handler(context: HttpCrawlingContext) -> None:
            body = (await context.http_response.read()).decode()
            links = [urljoin(context.request.url, href) for href in re.findall(r'href="([^"]+)"', body)]
            await context.add_requests([link for link in links if link.startswith(start_url.rsplit('/', 2)[0])])
            await context.push_data({'url': context.request.url, 'title': re.search(r'<title>(.*?)</title>', body).group(1)})

        await crawler.run([start_url])


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1], sys.argv[2]))
