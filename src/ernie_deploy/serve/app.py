"""The app factory: `create_app(models, settings)` builds the FastAPI app serving loaded predictors.

Usable in-process (tests drive it through httpx's ASGI transport inside its lifespan) and by
`ernie-deploy serve`, which loads the models, warms them and runs it under uvicorn.

Lifecycle: the lifespan starts the worker and inference threads and marks the app ready
(`GET /health` answers 503 before that and once shutdown begins). On shutdown, uvicorn stops
accepting connections and waits for the requests in flight; then the lifespan finishes whatever
is still queued and ends the threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ernie_deploy.api import AnyPredictor
from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.compat import compat_router
from ernie_deploy.serve.guards import BodyLimitMiddleware, api_key_dependencies, key_matches
from ernie_deploy.serve.infinity import infinity_router
from ernie_deploy.serve.metrics import Metrics, MetricsMiddleware
from ernie_deploy.serve.openapi import install_docs
from ernie_deploy.serve.playground import playground_router
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.routes import ERROR_RESPONSES, task_router
from ernie_deploy.serve.settings import ServeSettings
from ernie_deploy.serve.simple_serving import simple_serving_router
from ernie_deploy.serve.status import install_error_handlers
from ernie_deploy.serve.tei import tei_router

DESCRIPTION = """NER, classification, embedding and rerank on ONNX Runtime, batched across
requests. Errors are `{"error": {"type", "message"}}`; the message names the fix."""


def create_app(
    models: Mapping[str, AnyPredictor], settings: ServeSettings | None = None
) -> FastAPI:
    """A FastAPI app serving `models` (served name -> predictor from `ernie_deploy.load`)."""
    from ernie_deploy import __version__

    settings = settings or ServeSettings()
    metrics = Metrics()
    registry = Registry(models, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, registry.stop)

    app = FastAPI(
        title="ernie-deploy",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,  # install_docs adds them, behind the key unless the docs are public
        docs_url=None,
        redoc_url=None,
    )
    app.state.registry = registry
    app.state.metrics = metrics
    install_error_handlers(app)
    protected = api_key_dependencies(settings.api_key)
    app.include_router(task_router(registry, settings), dependencies=protected)
    app.include_router(compat_router(registry, settings), dependencies=protected)
    app.include_router(simple_serving_router(registry, settings), dependencies=protected)
    app.include_router(tei_router(registry, settings), dependencies=protected)
    app.include_router(infinity_router(registry, settings), dependencies=protected)
    app.include_router(_service_router(registry, metrics), dependencies=protected)
    app.include_router(_health_router(registry, settings))
    install_docs(app, registry, settings)
    if settings.playground_on:  # GET / only: POST / stays free for other routes
        app.include_router(playground_router())
    # Outermost first: count every request (413s included), then cap the body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _health_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get(
        "/health",
        response_model=s.Health,
        responses={503: {"model": s.Health, "description": "Not ready."}},
        summary="Readiness",
    )
    async def health(request: Request) -> Any:
        """200 once every model is loaded, warmed and its inference thread runs; else 503.

        The model names are listed when the docs are public or the request carries the key."""
        key = settings.api_key
        shown = settings.docs_open or key_matches(request.headers.get("authorization"), key)
        names = list(registry.models) if shown else None
        if registry.healthy:
            return JSONResponse({"status": "ok", "models": names})
        if registry.stopping:
            status = "stopping"
        elif registry.ready:
            status = "unhealthy"
        else:
            status = "starting"
        return JSONResponse({"status": status, "models": names}, status_code=503)

    return router


def _service_router(registry: Registry, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["service"], responses={401: ERROR_RESPONSES[401]})

    @router.get("/v1/models", response_model=s.ModelList, summary="Loaded models")
    async def list_models() -> Any:
        """The served models (OpenAI's list shape, plus task, labels and max_seq_length)."""
        cards = []
        for served in registry.models.values():
            p = served.predictor
            cards.append(
                {
                    "id": served.name,
                    "task": served.task,
                    "max_seq_length": p.engine.max_seq_length,
                    "labels": list(getattr(p, "labels", ())),
                    "providers": list(p.model.providers),
                }
            )
        return {"object": "list", "data": cards}

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> Response:
        """Requests by route and status, latency, batch sizes, queue depth, tokens."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router
