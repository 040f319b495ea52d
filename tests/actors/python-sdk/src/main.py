"""A small Actor on the Apify SDK for Python (python-start template layout) that touches every
platform feature troupe must provide: input, default dataset, OUTPUT record, a named dataset, the
default request queue, status messages, and the events websocket (Actor.init connects to it)."""

import os

from apify import Actor


async def main() -> None:
    async with Actor:
        actor_input = await Actor.get_input() or {}
        count = int(actor_input.get('count', 3))
        await Actor.set_status_message('Starting')
        await Actor.push_data([{'i': i, 'greeting': actor_input.get('greeting', 'hi')} for i in range(count)])

        named = await Actor.open_dataset(name='troupe-py-named')
        await named.push_data({'named': True})

        queue = await Actor.open_request_queue()
        for path in ('a', 'b', 'c'):
            await queue.add_request(f'http://127.0.0.1:9/{path}')
        await queue.add_request('http://127.0.0.1:9/a')  # a duplicate
        handled = 0
        while (request := await queue.fetch_next_request()) is not None:
            await queue.mark_request_as_handled(request)
            handled += 1

        await Actor.set_value('OUTPUT', {
            'ok': True,
            'count': count,
            'input': actor_input,
            'handled': handled,
            'atHome': Actor.is_at_home(),
            'runId': os.environ.get('ACTOR_RUN_ID'),
        })
        if actor_input.get('fail'):
            await Actor.fail(exit_code=7, status_message='Failed on purpose')
        await Actor.set_status_message(f'Done: {count} items', is_terminal=True)
