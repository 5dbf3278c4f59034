"""BentoML's request timeout, without a task a request (service.rest.deadline): 504 when no answer started in
time, with BentoML's body; an answer that started, or a quick one, untouched; a cancellation not its own
passed on."""

from __future__ import annotations

import asyncio

import pytest

from service.rest.deadline import RequestDeadline


def _run(app, timeout: float = 0.05):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(RequestDeadline(app, timeout=timeout)({"type": "http", "path": "/"}, receive, send))
    return sent


def test_a_request_not_answered_in_time_gets_504_and_the_app_is_stopped():
    stopped = []

    async def slow(scope, receive, send):
        try:
            await asyncio.sleep(10)
        finally:
            stopped.append(True)

    sent = _run(slow)
    assert sent[0]["status"] == 504 and stopped == [True]
    assert sent[1]["body"] == b'{"error":"Not able to process the request in 0.05 seconds"}'


def test_a_quick_answer_and_an_answer_that_started_are_left_alone():
    async def quick(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert [m.get("status", m.get("body")) for m in _run(quick)] == [200, b"ok"]

    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.15)  # past the deadline, but the answer has started
        await send({"type": "http.response.body", "body": b"late"})

    assert [m.get("status", m.get("body")) for m in _run(streaming)] == [200, b"late"]


def test_a_cancellation_that_is_not_the_deadlines_is_passed_on():
    async def main():
        async def slow(scope, receive, send):
            await asyncio.sleep(10)

        async def receive():
            return {}

        async def send(message):
            raise AssertionError("nothing is answered for a request cancelled from outside")

        task = asyncio.ensure_future(RequestDeadline(slow, timeout=5)({"type": "http"}, receive, send))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
