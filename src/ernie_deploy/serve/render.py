"""JSON answers rendered off the event loop, in pieces, so a large answer never stalls /health.

FastAPI validates and serialises a returned dict on the event loop: a 70 MB /v1/tokenize answer
held every other request (and /health) for seconds. Routes return `await answer(body)` instead:
the body is encoded in a worker thread, one list item at a time, so the GIL is handed back to
the loop between items. The response schemas still document the routes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi.responses import Response

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def render(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON; a top-level dict's lists are encoded item by item."""
    if not isinstance(body, dict):
        return _ENCODER.encode(body).encode("utf-8")
    parts = []
    for key, value in body.items():
        if isinstance(value, list):
            encoded = "[" + ",".join(_ENCODER.encode(item) for item in value) + "]"
        else:
            encoded = _ENCODER.encode(value)
        parts.append(f"{_ENCODER.encode(str(key))}:{encoded}")
    return ("{" + ",".join(parts) + "}").encode("utf-8")


async def answer(body: Any, status_code: int = 200) -> Response:
    """A JSON response whose bytes were made in a worker thread."""
    content = await asyncio.get_running_loop().run_in_executor(None, render, body)
    return Response(content, status_code=status_code, media_type="application/json")
