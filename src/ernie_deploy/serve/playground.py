"""The playground: `GET /` serves a static page (HTML, CSS, one script from serve/static/).

The page calls the server's own JSON routes from the browser (`/v1/models`, `/v1/ner`,
`/v1/classify`, `/v1/embed`, `/v1/rerank`) and holds no data itself, so its files are served
without the API key; the page has a field for the key and sends it with each call. A strict
Content-Security-Policy lets the page load nothing but its own files and talk to nothing but
this server; the page inserts every text as text, never as HTML.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_static(name: str) -> bytes:
    """One of the page's files, as shipped in the package (serve/static/NAME)."""
    return resources.files("ernie_deploy.serve").joinpath("static", name).read_bytes()


def playground_router() -> APIRouter:
    """`GET /` (the page) and `GET /playground/{file}` (its script and style sheet)."""
    router = APIRouter(include_in_schema=False)
    files = {name: read_static(name) for name in FILES}

    def respond(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @router.get("/")
    async def page() -> Response:
        return respond("index.html")

    @router.get("/playground/playground.js")
    async def script() -> Response:
        return respond("playground.js")

    @router.get("/playground/playground.css")
    async def style() -> Response:
        return respond("playground.css")

    return router
