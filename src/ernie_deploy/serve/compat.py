"""Routes in other services' shapes: OpenAI `/v1/embeddings` and PaddleNLP SimpleServing.

* `POST /v1/embeddings` answers as OpenAI does, so `openai.OpenAI(base_url=...)` works;
  `encoding_format: "base64"` (the openai client's default) is little-endian float32 bytes.
* `POST /models/{name}` takes SimpleServing's `{"data": {"text": [...]}, "parameters": {...}}`
  and answers `{"result": ...}` as the ERNIE 3.0 SimpleServing examples' handlers do:
  token_cls `{"value": [[{"entity", "label", "pos": [start, end]}]]}` per text (only
  entities; `pos` are character offsets, end exclusive), seq_cls
  `{"label": [index], "confidence": [p]}` (multi-label: lists per text, `prob_limit`
  threshold), plus `label_name` with the label strings.
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
    """The OpenAI embeddings route and the SimpleServing route."""
    router = APIRouter(tags=["compatible"], responses=ERROR_RESPONSES)

    @router.post(
        "/v1/embeddings", response_model=s.EmbeddingsResponse, summary="Embeddings (OpenAI shape)"
    )
    async def embeddings(req: s.EmbeddingsRequest) -> Any:
        """OpenAI's embeddings API: `input` string or list, `encoding_format` float or base64."""
        served = registry.find(req.model, "embedding", "/v1/embeddings")
        texts = check_inputs(req.input, settings)

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

        out = await registry.call(served, run)
        data = [
            {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(out.value)
        ]
        usage = {"prompt_tokens": out.tokens, "total_tokens": out.tokens}
        body = {"object": "list", "data": data, "model": served.name, "usage": usage}
        return await answer(body)  # already JSON types: skip re-validating every float

    @router.post(
        "/models/{name}",
        response_model=s.SimpleServingResponse,
        summary="PaddleNLP SimpleServing",
    )
    async def simple_serving(name: str, req: s.SimpleServingRequest) -> Any:
        """SimpleServing's request and answer, for NER (token_cls) and classification models."""
        served = registry.find(name, None, f"/models/{name}")
        if served.task not in ("token_cls", "seq_cls"):
            raise InputError(
                f"Model {name!r} is a {served.task} model and /models/{{name}} serves NER and "
                "classification models (as SimpleServing does): use /v1/embed or /v1/rerank."
            )
        if req.data.text_pair is not None:
            raise InputError(
                "data.text_pair is not supported: send single texts in data.text (rank pairs "
                "with /v1/rerank)."
            )
        raw = req.data.text
        joined = (
            [raw]
            if isinstance(raw, str)
            else ["".join(t) if isinstance(t, list) else t for t in raw]
        )
        if served.task == "token_cls":
            texts = check_inputs(joined, settings, windowed=True)
            out = await registry.call(served, lambda p: ner_result(p.predict(texts)))
            return await answer({"result": out.value})
        texts = check_inputs(joined, settings)
        labels = list(served.predictor.labels)  # type: ignore[union-attr]
        limit = req.parameters.get("prob_limit", 0.5)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise InputError(f"parameters.prob_limit must be a number, got {limit!r}.")
        out = await registry.call(
            served,
            lambda p: cls_result(p, p.predict(texts), labels, float(limit)),
            top_k=len(labels),
        )
        return await answer({"result": out.value})

    return router


def ner_result(results: list[Any]) -> dict[str, Any]:
    """SimpleServing's NER answer: per text, its entities with character positions."""
    value = [
        [{"entity": e.text, "label": e.label, "pos": [e.start, e.end]} for e in r.entities]
        for r in results
    ]
    return {"value": value}


def cls_result(predictor: Any, results: list[Any], labels: list[str], limit: float) -> Any:
    """SimpleServing's classification answer (label indices and confidences)."""
    index = {name: i for i, name in enumerate(labels)}
    if not predictor.multi_label:
        return {
            "label": [index[r.label] for r in results],
            "confidence": [r.score for r in results],
            "label_name": [r.label for r in results],
        }
    chosen = [
        [ls for ls in sorted(r.top_k, key=lambda x: index[x.label]) if ls.score > limit]
        for r in results
    ]
    return {
        "label": [[index[ls.label] for ls in c] for c in chosen],
        "confidence": [[ls.score for ls in c] for c in chosen],
        "label_name": [[ls.label for ls in c] for c in chosen],
    }
