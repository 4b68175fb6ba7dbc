"""The one table mapping errors to HTTP status codes, and the JSON error body every failure gets.

Every error answer is `{"error": {"type": ..., "message": ...}}` (the shape OpenAI's clients
read), where the message is one sentence naming the fix. Validation errors add `"param"`,
the path of the offending field.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ernie_deploy.errors import (
    EmptyInputError,
    ErnieDeployError,
    InputError,
    InputTooLongError,
    ModelRunError,
    NotReadyError,
    OverloadedError,
    RequestTooLargeError,
    UnauthorizedError,
    UnknownModelError,
)

log = logging.getLogger("ernie_deploy.serve")

# First match wins (isinstance), so subclasses come before their bases.
ERROR_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthorizedError, 401, "unauthorized"),
    (UnknownModelError, 404, "model_not_found"),
    (RequestTooLargeError, 413, "request_too_large"),
    (EmptyInputError, 400, "empty_input"),
    (InputTooLongError, 422, "input_too_long"),
    (InputError, 422, "invalid_input"),
    (OverloadedError, 429, "overloaded"),
    (NotReadyError, 503, "not_ready"),
    (ModelRunError, 500, "model_error"),
    (ErnieDeployError, 500, "model_error"),
)
# Framework-level answers (no route, wrong method, unparsable body) get the same shape.
_HTTP_TYPES = {
    400: ("invalid_json", "The request body is not valid UTF-8 JSON: send a JSON object."),
    404: ("not_found", "No such route: see /docs for the routes this server has."),
    405: ("method_not_allowed", "This route does not take that method: see /docs."),
}


def status_for(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error type) for an exception; unknown exceptions are 500 server_error."""
    for cls, status, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, kind
    return 500, "server_error"


def error_response(
    status: int,
    kind: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status, headers=headers)


# The handlers are coroutines on purpose: Starlette runs a plain function in a worker thread
# and awaits it, and a request cut off at shutdown (503 not_ready) must answer without waiting
# again, or the server's exit cancels it mid-answer and the client gets uvicorn's bare 500.
async def _ours(request: Request, exc: Exception) -> JSONResponse:
    status, kind = status_for(exc)
    headers = None
    if isinstance(exc, (OverloadedError, NotReadyError)):  # busy, or stopping: come back
        headers = {"Retry-After": "1"}
    elif isinstance(exc, UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(status, kind, str(exc), headers=headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    errors = [dict(e) for e in exc.errors()] if isinstance(exc, RequestValidationError) else []
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(e for e in errors if e["type"] == "json_invalid").get("ctx", {})
        return error_response(
            400,
            "invalid_json",
            f"The request body is not valid JSON ({reason.get('error', 'malformed')}): fix its "
            "syntax.",
        )
    ids = next((e for e in errors if e.get("type") == "token_ids"), None)
    if ids is not None:  # a known client's default, answered with the fix itself
        return error_response(422, "invalid_input", str(ids["msg"]), param="input")
    problems: dict[str, str] = {}  # one line per field (union branches repeat themselves)
    for e in errors:
        problems.setdefault(_field(e.get("loc", ())), str(e.get("msg", "is invalid")))
    if not problems:
        problems["body"] = str(exc)
    listed = "; ".join(f"{field!r}: {msg}" for field, msg in list(problems.items())[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    first = next(iter(problems))
    return error_response(
        422,
        "invalid_request",
        f"Invalid request ({listed}{more}): send the fields and types /docs describes for "
        f"{request.url.path}.",
        param=None if first == "body" else first,
    )


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _field(loc: Any) -> str:
    """A pydantic error location as a field path, without union-branch tags ('str', 'list[str]')."""
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(str(p))
        elif p != "body" and p not in _TYPE_TAGS and "[" not in p and not p[:1].isupper():
            parts.append(p)
    return ".".join(parts) or "body"


async def _http(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind, message = _HTTP_TYPES.get(status, ("http_error", f"HTTP {status}."))
    headers = getattr(exc, "headers", None)
    return error_response(status, kind, message, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer, so the server logs its traceback.
    return error_response(
        500, "server_error", f"Internal error ({type(exc).__name__}): see the server log."
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the table above."""
    app.add_exception_handler(ErnieDeployError, _ours)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
