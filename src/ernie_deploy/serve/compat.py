"""OpenAI's `/v1/embeddings` (also unprefixed, `/embeddings`, as Infinity and TEI serve it).

Answers as OpenAI does, so `openai.OpenAI(base_url=...)` works; `encoding_format: "base64"` (the
openai client's default) is little-endian float32 bytes. Token-id input (what LangChain's
`OpenAIEmbeddings` sends by default) is answered 422 naming `check_embedding_ctx_length=False`.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter

from ernie_deploy.errors import InputError
from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.inputs import check_inputs
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.render import answer
from ernie_deploy.serve.routes import ERROR_RESPONSES
from ernie_deploy.serve.settings import ServeSettings


def compat_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    """The OpenAI embeddings route."""
    router = APIRouter(tags=["compatible"], responses=ERROR_RESPONSES)

    @router.post(
        "/v1/embeddings", response_model=s.EmbeddingsResponse, summary="Embeddings (OpenAI shape)"
    )
    @router.post(
        "/embeddings",
        response_model=s.EmbeddingsResponse,
        summary="Embeddings (OpenAI shape, unprefixed as Infinity and TEI serve it)",
    )
    async def embeddings(req: s.EmbeddingsRequest) -> Any:
        """OpenAI's embeddings API: `input` string or list, `encoding_format` float or base64."""
        served = registry.find(req.model, "embedding", "/v1/embeddings")
        truncate = settings.truncating(req.truncate)
        texts = check_inputs(req.input, settings, truncate=truncate)

        def run(predictor: Any) -> list[Any]:
            vectors: np.ndarray = predictor.vectors(texts)
            if req.dimensions is not None and req.dimensions != vectors.shape[1]:
                raise InputError(
                    f"Model {served.name!r} makes {vectors.shape[1]}-dimensional embeddings, not "
                    f"{req.dimensions}: leave out 'dimensions' or pass {vectors.shape[1]}."
                )
            if req.encoding_format == "base64":
                return [
                    base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors
                ]
            return vectors.astype(float).tolist()

        out = await registry.call(served, run, truncate=truncate)
        data = [
            {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(out.value)
        ]
        usage = {"prompt_tokens": out.tokens, "total_tokens": out.tokens}
        body = {"object": "list", "data": data, "model": served.name, "usage": usage}
        return await answer(body)  # already JSON types: skip re-validating every float

    return router
