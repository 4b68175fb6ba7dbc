"""Request guards: the body-size limit (413) and the optional API key (401, constant-time compare)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ernie_deploy.errors import UnauthorizedError
from ernie_deploy.serve.status import error_response


class BodyLimitMiddleware:
    """ASGI middleware: answer 413 when a request body exceeds `max_bytes`.

    The body is read here (the JSON routes read it whole anyway) and replayed to the app, so
    a client that lies in Content-Length, or sends chunks, is cut off at the limit too.
    A body sent without a content type, or as curl's default form type (`curl -d '{...}'`),
    is taken as JSON: every route takes JSON and nothing else.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _form_or_missing(scope):  # in place: outer middleware reads scope["route"]
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers", ()) if k != b"content-type"
            ] + [(b"content-type", b"application/json")]
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Any, receive: Any, send: Any) -> None:
        response = error_response(
            413,
            "request_too_large",
            f"The request body is over the server's limit of {self.max_bytes} bytes: send fewer "
            "or shorter texts per request, or raise --max-body-bytes.",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _form_or_missing(scope: Any) -> bool:
    for key, value in scope.get("headers") or ():
        if key == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == FORM)
    return True


FORM = b"application/x-www-form-urlencoded"
_bearer = HTTPBearer(auto_error=False, description="The API key the server was started with.")


def key_matches(authorization: str | None, key: str | None) -> bool:
    """Whether an Authorization header carries `Bearer KEY` (constant-time; True without a key)."""
    if not key:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode("utf-8"), key.encode("utf-8"))


def api_key_dependencies(key: str | None) -> list[Any]:
    """FastAPI dependencies letting a request through only with `Authorization: Bearer KEY`
    (none when the server has no key)."""
    if not key:
        return []
    expected = key.encode("utf-8")

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise UnauthorizedError(
                "Missing or wrong API key: send the header 'Authorization: Bearer <key>' with "
                "the key the server was started with."
            )

    return [Depends(check)]
