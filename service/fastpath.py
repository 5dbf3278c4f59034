"""The MNIST routes that carry many images, answered without BentoML's request and response models.

``POST /mnist/predict_batch`` (a ``.npy`` body) is served here alone. ``POST /mnist/predict`` is
served here when its body is a plain, valid images request (see :mod:`service.fastjson`); any
other body is handed on to the BentoML endpoint unchanged, whose validation names the field and
the rule. Both answer with the same JSON as the endpoint, from the same runtime and metrics.

It sits inside :class:`service.middleware.RequestGuard` (415 and 413 come from there) and inside
BentoML's own middlewares, so request metrics, concurrency limits and timeouts apply as before.
"""

from __future__ import annotations

import anyio

from service import routes
from service.fastjson import images_from_json
from service.middleware import error_body, read_body, replay_body, respond
from service.npy import decode_npy_images
from sparsity.errors import InvalidInputError

INLINE_MAX_BYTES = 64 * 1024
"""Bodies up to this size (about 8 JSON images) are handled on the event loop; larger ones in a
worker thread, so the loop keeps accepting requests while a big batch is parsed and run."""


DECODERS = {routes.MNIST_PREDICT.path: images_from_json, routes.MNIST_PREDICT_BATCH.path: decode_npy_images}
"""Each route's body reader: an image array, ``None`` (not a plain request), or InvalidInputError."""


class FastPaths:
    OWN_ROUTES = (routes.MNIST_PREDICT_BATCH.path,)

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        decode = DECODERS.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if scope.get("method") != "POST" or decode is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if len(body) <= INLINE_MAX_BYTES:
            answer = _answer(decode, body)
        else:
            answer = await anyio.to_thread.run_sync(_answer, decode, body)
        if answer is None:  # not a plain images request: BentoML's endpoint validates it and names what is wrong
            await self.app(scope, replay_body(body, receive), send)
        else:
            await respond(send, *answer)


def _answer(decode, body: bytes) -> tuple[int, bytes] | None:
    """Decode, predict and encode one body (run inline or in a thread): ``(status, JSON body)``, or
    ``None`` when the body is for BentoML's endpoint to validate."""
    import bentoml

    try:
        images = decode(body)
        if images is None:
            return None
        return 200, bentoml.get_current_service().mnist_json(images)
    except InvalidInputError as exc:
        return 400, error_body(exc.rule, exc.field, "invalid_input")
