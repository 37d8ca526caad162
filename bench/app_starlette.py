"""The sse-starlette bench app: a fan-out written the obvious way.

Every client gets its own unbounded ``asyncio.Queue``; publishing puts the
message into each. The generator yields a dict per event and sse-starlette
encodes it, as its README shows. Run it with ``uvicorn app_starlette:app``.
"""

from __future__ import annotations

import asyncio
import os
import typing as t

from publisher import WARM, Plan, run_asyncio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator

queues: set[asyncio.Queue[str]] = set()
tasks: set[asyncio.Task[int]] = set()
PING = float(os.environ.get("BENCH_PING", "15"))


async def publish(data: str) -> None:
    for queue in queues:
        queue.put_nowait(data)


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    queues.add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            queues.discard(queue)

    return EventSourceResponse(stream(), ping=PING)


async def trigger(request: Request) -> PlainTextResponse:
    if request.query_params.get("kind") == "warm":
        await publish(WARM)
        return PlainTextResponse("warm\n")
    task = asyncio.get_running_loop().create_task(
        run_asyncio(publish, Plan.from_query(request.query_params))
    )
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return PlainTextResponse("started\n")


app = Starlette(routes=[Route("/events", events), Route("/bench/publish", trigger)])
