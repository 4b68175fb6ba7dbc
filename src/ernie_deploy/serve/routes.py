"""The task routes: /v1/ner, /v1/classify, /v1/embed, /v1/tokenize, /v1/rerank and /v2/rerank (Cohere).

Each handler checks the request's limits, finds the model, and runs the task head's own
method in a worker thread (pre- and post-processing) with inference batched across requests.
Results are the library's `to_dict()` records, the same JSON `ernie-deploy predict` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.inputs import check_inputs, prompt_for
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.render import answer
from ernie_deploy.serve.settings import ServeSettings
from ernie_deploy.tasks.results import RerankHit
from ernie_deploy.tasks.tokenization import Tokenizer

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": s.ErrorBody, "description": "Empty text or unparsable body."},
    401: {"model": s.ErrorBody, "description": "Missing or wrong API key."},
    404: {"model": s.ErrorBody, "description": "No such model for this route."},
    413: {"model": s.ErrorBody, "description": "Request body over the size limit."},
    422: {"model": s.ErrorBody, "description": "Invalid request, or text over a limit."},
    429: {"model": s.ErrorBody, "description": "The model's queue is full: retry later."},
    503: {"model": s.ErrorBody, "description": "Starting or shutting down."},
}


def task_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    """The native task routes and the Cohere / Jina rerank route."""
    router = APIRouter(tags=["tasks"], responses=ERROR_RESPONSES)

    @router.post("/v1/ner", response_model=s.NerResponse, summary="Named entities")
    async def ner(req: s.NerRequest) -> Any:
        """Entities with character offsets into each text; long texts are windowed."""
        served = registry.find(req.model, "token_cls", "/v1/ner")
        texts = check_inputs(req.texts, settings, windowed=True)
        out = await registry.call(served, lambda p: [r.to_dict() for r in p.predict(texts)])
        return await answer({"model": served.name, "results": out.value})

    @router.post("/v1/classify", response_model=s.ClassifyResponse, summary="Classify texts")
    async def classify(req: s.ClassifyRequest) -> Any:
        """The best label and score of each text, and the k best."""
        served = registry.find(req.model, "seq_cls", "/v1/classify")
        truncate = settings.truncating(req.truncate)
        texts = check_inputs(req.texts, settings, truncate=truncate)
        options: dict[str, Any] = {"truncate": truncate}
        if req.top_k is not None:
            options["top_k"] = min(req.top_k, len(served.predictor.labels))  # type: ignore[union-attr]
        out = await registry.call(
            served, lambda p: [r.to_dict() for r in p.predict(texts)], **options
        )
        return await answer({"model": served.name, "results": out.value})

    @router.post("/v1/embed", response_model=s.EmbedResponse, summary="Embed texts")
    async def embed(req: s.EmbedRequest) -> Any:
        """One vector per text (normalised unless the model says otherwise)."""
        served = registry.find(req.model, "embedding", "/v1/embed")
        truncate = settings.truncating(req.truncate)
        texts = check_inputs(req.texts, settings, truncate=truncate)
        prompt = prompt_for(served.predictor, req.prompt_name, req.input_type)
        options: dict[str, Any] = {"truncate": truncate}
        if prompt is not None:
            options["prompt_name"] = prompt
        out = await registry.call(
            served, lambda p: [r.to_dict() for r in p.predict(texts)], **options
        )
        return await answer({"model": served.name, "results": out.value})

    @router.post("/v1/tokenize", response_model=s.TokenizeResponse, summary="Tokenize texts")
    async def tokenize(req: s.TokenizeRequest) -> Any:
        """The model's tokens of each text (no special tokens), with character offsets."""
        served = registry.find(req.model, None, "/v1/tokenize")
        texts = check_inputs(req.texts, settings, windowed=True)
        out = await registry.call(served, lambda p: tokens_json(p.engine.tokenizer, texts))
        # a token record per token: large even for a few texts, so never on the loop
        return await answer({"model": served.name, "results": out.value}, inline=False)

    @router.post(
        "/v1/rerank",
        response_model=s.RerankResponse,
        summary="Rerank documents (Cohere v1 / Jina shape)",
    )
    @router.post(
        "/v2/rerank",
        response_model=s.RerankResponse,
        summary="Rerank documents (Cohere v2: cohere.ClientV2, langchain-cohere)",
    )
    async def rerank(req: s.RerankRequest) -> Any:
        """Documents sorted by relevance to the query, best first, with their input index."""
        originals = [d if isinstance(d, str) else d.text for d in req.documents]
        run = await run_rerank(
            registry, settings, req.model, req.query, originals, req.top_n, req.truncate
        )
        results = []
        for hit in run.hits:
            result: dict[str, Any] = {"index": hit.index, "relevance_score": hit.score}
            if req.return_documents:
                result["document"] = {"text": originals[hit.index]}
            results.append(result)
        usage = {"total_tokens": run.tokens}
        return await answer({"model": run.model, "results": results, "usage": usage})

    return router


@dataclass(frozen=True)
class Reranked:
    """A rerank request's outcome: the model's name, its hits (best first) and tokens run."""

    model: str
    hits: tuple[RerankHit, ...]
    tokens: int


async def run_rerank(
    registry: Registry,
    settings: ServeSettings,
    model: str | None,
    query: str,
    documents: list[str],
    top_n: int | None,
    truncate: bool | None,
    route: str = "/v1/rerank",
) -> Reranked:
    """Check and run one rerank request (every rerank route's shape goes through here)."""
    served = registry.find(model, "rerank", route)
    cut = settings.truncating(truncate)
    (q,) = check_inputs([query], settings, truncate=cut, what="query")
    docs = check_inputs(documents, settings, truncate=cut, what="document")
    out = await registry.call(served, lambda p: p.rerank(q, docs, top_n=top_n), truncate=cut)
    return Reranked(served.name, out.value.hits, out.tokens)


def tokens_json(tokenizer: Tokenizer, texts: list[str]) -> list[dict[str, Any]]:
    """Each text's tokens as {id, token, start, end} records."""
    results = []
    for text, t in zip(texts, tokenizer.tokenize(texts)):
        strings = tokenizer.tokens_to_strings(t.ids)
        tokens = [
            {"id": int(i), "token": tok, "start": int(a), "end": int(b)}
            for i, tok, (a, b) in zip(t.ids, strings, t.offsets)
        ]
        results.append({"text": text, "tokens": tokens})
    return results
