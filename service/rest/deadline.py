"""BentoML's request timeout (``traffic.timeout``: 504 when a request is not answered in time), without a task a
request.

BentoML's ``TimeoutMiddleware`` runs every request in a task of its own, with a future and a timer beside it, so
that it can answer 504 while the request runs on: a task switch and three objects a request (about 10 us of a
one-image request, ``make profile``). This does the same with one timer: the request runs in the task that
received it, and past the deadline it is cancelled and answered 504 with the same body, unless its answer has
started (then it is left to finish, as BentoML's does). Installed in place of BentoML's class
(:mod:`service.bentoml_private` says why that works and checks it still does).
"""

from __future__ import annotations

import asyncio

import orjson


class RequestDeadline:
    """ASGI middleware: ``timeout`` seconds to start an answer, else 504."""

    def __init__(self, app, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_started(message) -> None:
            nonlocal started
            started = True
            await send(message)

        task = asyncio.current_task()
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, task, lambda: started)
        try:
            await self.app(scope, receive, send_started)
        except asyncio.CancelledError:
            if started or not getattr(task, "sparsity_deadline", False) or task.uncancel() > 0:
                raise  # not ours: the client left or the server is stopping
            body = orjson.dumps({"error": f"Not able to process the request in {self.timeout} seconds"})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 504, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            timer.cancel()

    @staticmethod
    def _expire(task: asyncio.Task, started) -> None:
        if not started() and not task.done():
            task.sparsity_deadline = True
            task.cancel()
