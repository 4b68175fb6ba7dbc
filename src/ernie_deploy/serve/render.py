"""JSON answers: orjson when installed, small ones on the event loop, large ones in a worker thread.

FastAPI validates and serialises a returned dict on the event loop: a 70 MB /v1/tokenize answer
held every other request (and /health) for seconds. Routes return `await answer(body)` instead:
a small body (a few list items, the usual request) is encoded at once on the loop, which saves
two thread hand-offs; a large one is encoded in a worker thread, in pieces, so the GIL is handed
back to the loop between them. orjson (the `serve` extra) encodes a 384-float embedding answer
in ~15 µs where the stdlib encoder takes ~380 µs (measured here, RESULTS.md). The response
schemas still document the routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi.responses import Response

# A body whose top-level lists hold at most this many items in all is encoded on the loop.
INLINE_ITEMS = 16

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _stdlib_dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _pick_dumps() -> Callable[[Any], bytes]:
    try:
        import orjson
    except ModuleNotFoundError:  # serve extra without orjson: the stdlib encoder
        return _stdlib_dumps
    # numpy values and non-string keys encode as the stdlib encoder's callers expect; a NaN
    # (which the stdlib encoder refused) becomes null
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=option)

    return dumps


dumps = _pick_dumps()


def render(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON; a top-level dict's lists are encoded item by item."""
    if not isinstance(body, dict):
        return dumps(body)
    parts = []
    for key, value in body.items():
        if isinstance(value, list):
            encoded = b"[" + b",".join(dumps(item) for item in value) + b"]"
        else:
            encoded = dumps(value)
        parts.append(dumps(str(key)) + b":" + encoded)
    return b"{" + b",".join(parts) + b"}"


def is_small(body: Any, limit: int = INLINE_ITEMS) -> bool:
    """Whether `body` is cheap enough to encode on the event loop (few top-level list items)."""
    if not isinstance(body, dict):
        return False
    return sum(len(v) for v in body.values() if isinstance(v, list)) <= limit


async def answer(body: Any, status_code: int = 200, inline: bool | None = None) -> Response:
    """A JSON response; `inline` None encodes small bodies on the loop, others in a thread."""
    if inline is None:
        inline = is_small(body)
    if inline:
        content = render(body)
    else:
        content = await asyncio.get_running_loop().run_in_executor(None, render, body)
    return Response(content, status_code=status_code, media_type="application/json")
