"""Infinity's unprefixed routes: `/rerank` (its `documents` body), `/classify`, `/models`.

`/embeddings` is the OpenAI route (`serve.compat`), served unprefixed as Infinity and TEI do.
`/rerank` is shared with TEI and told apart by the body: `documents` is Infinity's, `texts`
TEI's. Answers carry Infinity's `object`, `id`, `created` and `usage` fields.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional

from fastapi import APIRouter
from pydantic import Field, StrictBool

from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.inputs import check_inputs
from ernie_deploy.serve.pairs import ranked_labels, scores
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.render import answer
from ernie_deploy.serve.routes import ERROR_RESPONSES, run_rerank
from ernie_deploy.serve.settings import ServeSettings


class InfinityRerankRequest(s._Compat):
    query: s.Text
    documents: list[s.Text] = Field(json_schema_extra={"minItems": 1})
    return_documents: StrictBool = False
    raw_scores: StrictBool = False
    top_n: Optional[int] = Field(default=None, gt=0)
    model: Optional[str] = None
    truncate: Optional[StrictBool] = None


class InfinityClassifyRequest(s._Compat):
    input: list[s.Text] = Field(json_schema_extra={"minItems": 1})
    model: Optional[str] = None
    raw_scores: StrictBool = False
    truncate: Optional[StrictBool] = None


def _stamp(kind: str, model: str, tokens: int) -> dict[str, Any]:
    return {
        "object": kind,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "id": f"infinity-{uuid.uuid4()}",
        "created": int(time.time()),
    }


async def infinity_rerank(
    registry: Registry, settings: ServeSettings, req: InfinityRerankRequest
) -> Any:
    """Infinity's rerank answer: results best first with `relevance_score`, `index`, `document`."""
    top = await run_rerank(
        registry,
        settings,
        req.model,
        req.query,
        list(req.documents),
        req.top_n,
        req.truncate,
        "/rerank",
    )
    results = [
        {
            "relevance_score": hit.raw_score if req.raw_scores else hit.score,
            "index": hit.index,
            "document": req.documents[hit.index] if req.return_documents else None,
        }
        for hit in top.hits
    ]
    return await answer({**_stamp("rerank", top.model, top.tokens), "results": results})


def infinity_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    """Infinity's /classify and /models (its /rerank is served with TEI's, by body)."""
    router = APIRouter(tags=["infinity"], responses=ERROR_RESPONSES)

    @router.post("/classify", summary="Classify texts (Infinity)")
    async def classify(req: InfinityClassifyRequest) -> Any:
        """Every label with its score, best first, per text."""
        served = registry.find(req.model, "seq_cls", "/classify")
        truncate = settings.truncating(req.truncate)
        texts = check_inputs(req.input, settings, truncate=truncate)
        labels = list(served.predictor.labels)  # type: ignore[union-attr]

        def run(p: Any) -> list[list[dict[str, Any]]]:
            rows = scores(p, p.logits(texts), req.raw_scores)
            return [ranked_labels(labels, row) for row in rows]

        out = await registry.call(served, run, truncate=truncate)
        return await answer({**_stamp("classify", served.name, out.tokens), "data": out.value})

    @router.get("/models", summary="Loaded models (Infinity)")
    async def models() -> Any:
        """Infinity's model list: id, capabilities, backend."""
        capability = {"embedding": "embed", "rerank": "rerank", "seq_cls": "classify"}
        created = int(time.time())
        data = [
            {
                "id": m.name,
                "stats": {"queue_fraction": m.in_flight / settings.max_queue},
                "object": "model",
                "owned_by": "ernie-deploy",
                "created": created,
                "backend": "onnxruntime",
                "capabilities": [capability.get(m.task, m.task)],
            }
            for m in registry.models.values()
        ]
        return {"data": data, "object": "list"}

    return router
