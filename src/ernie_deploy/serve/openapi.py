"""The OpenAPI document as this server behaves: its model names, its sizes, docs open or closed.

The pydantic schemas describe every server; `install_docs` fills in what only the running
app knows, so a client (or schemathesis) reading `/openapi.json` is told the truth:

* `model`: the names loaded for each route's task, required where several are loaded;
* OpenAI `dimensions`: the sizes the loaded embedding models make;
* `prompt_name`: the prompts the loaded embedding models name;
* with an API key and no `public_docs`, `/openapi.json`, `/docs` and `/redoc` need the key.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ernie_deploy.serve.guards import api_key_dependencies
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.settings import ServeSettings
from ernie_deploy.serve.tei import TEI_TASKS

# Request schema -> the task whose models its `model` field names (None: any model).
MODEL_FIELDS: dict[str, str | None] = {
    "NerRequest": "token_cls",
    "ClassifyRequest": "seq_cls",
    "EmbedRequest": "embedding",
    "TokenizeRequest": None,
    "RerankRequest": "rerank",
    "EmbeddingsRequest": "embedding",
    "TeiEmbedRequest": "embedding",
    "TeiRerankRequest": "rerank",
    "TeiPredictRequest": "seq_cls",
    "TeiTokenizeRequest": None,
    "InfinityRerankRequest": "rerank",
    "InfinityClassifyRequest": "seq_cls",
}


def install_docs(app: FastAPI, registry: Registry, settings: ServeSettings) -> None:
    """Replace `app.openapi` with the server-specific document; close the docs when asked.

    The app must be built with `openapi_url=None, docs_url=None, redoc_url=None`: the routes
    are added here, behind the API key unless `settings.docs_open`.
    """
    plain = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cache:
            cache["doc"] = describe(copy.deepcopy(plain()), registry)
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
    guard = [] if settings.docs_open else api_key_dependencies(settings.api_key)
    router = APIRouter(include_in_schema=False, dependencies=guard)

    @router.get("/openapi.json")
    async def openapi_json() -> JSONResponse:
        return JSONResponse(openapi())

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    app.include_router(router)


def describe(doc: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """`doc` with the loaded models' names and embedding sizes written into the request schemas."""
    schemas = doc.get("components", {}).get("schemas", {})
    for name, task in MODEL_FIELDS.items():
        schema = schemas.get(name)
        if schema is None or "model" not in schema.get("properties", {}):
            continue
        names = [m.name for m in registry.models.values() if task is None or m.task == task]
        prop = schema["properties"]["model"]
        text = prop.get("description", "")
        if len(names) > 1:
            schema["properties"]["model"] = {"type": "string", "enum": names, "description": text}
            schema.setdefault("required", []).append("model")
        elif names:
            choice = {"type": "string", "enum": names}
            schema["properties"]["model"] = {
                "anyOf": [choice, {"type": "null"}],
                "description": text,
            }
    tei = [m.name for m in registry.models.values() if m.task in TEI_TASKS]
    for param in doc.get("paths", {}).get("/info", {}).get("get", {}).get("parameters", []):
        if param.get("name") == "model" and tei:
            param["schema"] = {"type": "string", "enum": tei}
            param["required"] = len(tei) > 1
    prompts = sorted(
        {n for m in registry.models.values() for n in getattr(m.predictor, "prompts", {})}
    )
    for schema in schemas.values():
        prop = schema.get("properties", {}).get("prompt_name")
        if prop is not None:  # the prompt names the loaded embedding models have
            choices: list[dict[str, Any]] = [{"type": "null"}]
            if prompts:
                choices.insert(0, {"type": "string", "enum": prompts})
            schema["properties"]["prompt_name"] = {
                "anyOf": choices,
                "description": prop.get("description", ""),
            }
    sizes = sorted({d for d in (registry.embedding_size(m) for m in registry.models) if d})
    dims = schemas.get("EmbeddingsRequest", {}).get("properties", {}).get("dimensions")
    if dims is not None and sizes:
        dims.pop("anyOf", None)
        dims["anyOf"] = [{"type": "integer", "enum": sizes}, {"type": "null"}]
    return doc
