"""text-embeddings-inference's routes: `/embed`, `/rerank`, `/predict`, `/tokenize`, `/info`, `POST /`.

Bodies and answers follow TEI's router (`inputs`, `normalize`, `truncate`, `raw_scores`,
`return_text`; bare lists as answers), so `huggingface_hub.InferenceClient(model=URL)` and
code written for TEI work unchanged. Differences: TEI serves one model, so each route picks the
only loaded model of its task unless the body names one in `model`; `/tokenize` offsets are
characters (TEI's are UTF-8 bytes); errors keep this server's `{"error": {...}}` body.
`/rerank` also takes Infinity's body (`documents` instead of `texts`): see `serve.infinity`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Optional, Union

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, StrictBool, ValidationError, WithJsonSchema

from ernie_deploy.errors import InputError
from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.infinity import InfinityRerankRequest, infinity_rerank
from ernie_deploy.serve.inputs import check_inputs, prompt_for
from ernie_deploy.serve.pairs import pair_logits, ranked_labels, scores
from ernie_deploy.serve.registry import Registry, ServedModel
from ernie_deploy.serve.render import answer
from ernie_deploy.serve.routes import ERROR_RESPONSES, run_rerank
from ernie_deploy.serve.settings import ServeSettings

TEI_TASKS = {"embedding": "embed", "seq_cls": "predict", "rerank": "rerank"}


class TeiEmbedRequest(s._Compat):
    inputs: s.Texts
    normalize: StrictBool = True
    truncate: Optional[StrictBool] = None
    prompt_name: Optional[str] = None
    model: Optional[str] = None


class TeiRerankRequest(s._Compat):
    query: s.Text
    texts: list[s.Text] = Field(json_schema_extra={"minItems": 1})
    truncate: Optional[StrictBool] = None
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    model: Optional[str] = None


_SEQUENCE = {"type": "array", "items": s.NOT_BLANK, "minItems": 1, "maxItems": 2}
PredictInputs = Annotated[
    Union[s.Text, list[s.Text], list[list[s.Text]]],
    WithJsonSchema(
        {
            "anyOf": [s.NOT_BLANK, _SEQUENCE, {"type": "array", "items": _SEQUENCE, "minItems": 1}],
            "description": "A text, a pair [text, text_pair], or a batch of [text] and "
            "[text, text_pair] lists.",
        }
    ),
]


class TeiPredictRequest(s._Compat):
    inputs: PredictInputs
    truncate: Optional[StrictBool] = None
    raw_scores: StrictBool = False
    model: Optional[str] = None


class TeiTokenizeRequest(s._Compat):
    inputs: s.Texts
    add_special_tokens: StrictBool = True
    model: Optional[str] = None


def tei_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    """TEI's routes (NER has no TEI route: use /v1/ner)."""
    router = APIRouter(tags=["text-embeddings-inference"], responses=ERROR_RESPONSES)

    async def embed(req: TeiEmbedRequest) -> Any:
        served = registry.find(req.model, "embedding", "/embed")
        truncate = settings.truncating(req.truncate)
        texts = check_inputs(req.inputs, settings, truncate=truncate)
        options: dict[str, Any] = {"truncate": truncate, "normalize": req.normalize}
        prompt = prompt_for(served.predictor, req.prompt_name, None)
        if prompt is not None:
            options["prompt_name"] = prompt
        out = await registry.call(
            served, lambda p: p.vectors(texts).astype(float).tolist(), **options
        )
        return await answer(out.value)

    async def rerank(req: Union[TeiRerankRequest, InfinityRerankRequest]) -> Any:
        if isinstance(req, InfinityRerankRequest):
            return await infinity_rerank(registry, settings, req)
        top = await run_rerank(
            registry,
            settings,
            req.model,
            req.query,
            list(req.texts),
            None,
            req.truncate,
            "/rerank",
        )
        ranks = []
        for hit in top.hits:
            rank: dict[str, Any] = {"index": hit.index}
            if req.return_text:
                rank["text"] = req.texts[hit.index]
            rank["score"] = hit.raw_score if req.raw_scores else hit.score
            ranks.append(rank)
        return await answer(ranks)

    async def predict(req: TeiPredictRequest) -> Any:
        served = registry.find(req.model, "seq_cls", "/predict")
        truncate = settings.truncating(req.truncate)
        batch, is_batch = _predict_inputs(req.inputs)
        firsts = check_inputs([a for a, _ in batch], settings, truncate=truncate)
        seconds = [b for _, b in batch if b is not None]
        if seconds:
            seconds = check_inputs(seconds, settings, truncate=truncate, what="text_pair")
        labels = list(served.predictor.labels)  # type: ignore[union-attr]

        def run(p: Any) -> list[list[dict[str, Any]]]:
            singles = [i for i, (_, b) in enumerate(batch) if b is None]
            doubles = [i for i, (_, b) in enumerate(batch) if b is not None]
            logits = np.empty((len(batch), len(labels)), np.float32)
            if singles:
                logits[singles] = p.logits([firsts[i] for i in singles])
            if doubles:
                pairs = [(firsts[i], b) for i, b in zip(doubles, seconds)]
                logits[doubles] = pair_logits(p, pairs, truncate)
            return [ranked_labels(labels, row) for row in scores(p, logits, req.raw_scores)]

        out = await registry.call(served, run, truncate=truncate)
        return await answer(out.value if is_batch else out.value[0])

    async def tokenize(req: TeiTokenizeRequest) -> Any:
        served = registry.find(req.model, None, "/tokenize")
        texts = check_inputs(req.inputs, settings, windowed=True)
        out = await registry.call(
            served, lambda p: tei_tokens(p.engine.tokenizer, texts, req.add_special_tokens)
        )
        return await answer(out.value)

    router.post("/embed", summary="Embed (TEI)")(embed)
    router.post("/rerank", summary="Rerank (TEI `texts`, or Infinity `documents`)")(rerank)
    router.post("/predict", summary="Classify texts or pairs (TEI)")(predict)
    router.post("/tokenize", summary="Tokenize (TEI)")(tokenize)

    @router.get("/info", summary="Model info (TEI)")
    async def info(model: Optional[str] = None) -> Any:
        """TEI's /info for the only model with a TEI task (or `?model=NAME`)."""
        return _info(_tei_model(registry, model, "/info"), settings)

    @router.post("/", include_in_schema=False)
    async def root(request: Request) -> Any:
        """TEI's root route, by the model's task: embed, predict or rerank."""
        try:
            body = await request.json()
        except ValueError as exc:  # not JSON, or not UTF-8: the same 400 as every route
            error = {"type": "json_invalid", "loc": ("body",), "msg": str(exc)}
            raise RequestValidationError([{**error, "ctx": {"error": str(exc)}}]) from None
        name = body.get("model") if isinstance(body, dict) else None
        served = _tei_model(registry, name if isinstance(name, str) else None, "/")
        kinds: dict[str, tuple[type[Any], Callable[[Any], Awaitable[Any]]]] = {
            "embed": (TeiEmbedRequest, embed),
            "predict": (TeiPredictRequest, predict),
            "rerank": (TeiRerankRequest, rerank),
        }
        schema, handler = kinds[TEI_TASKS[served.task]]
        try:
            req: Any = schema.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        req.model = served.name
        return await handler(req)

    return router


def _predict_inputs(inputs: Any) -> tuple[list[tuple[str, str | None]], bool]:
    """TEI's predict input as (text, text_pair or None) items, and whether it was a batch."""
    if isinstance(inputs, str):
        return [(inputs, None)], False
    if inputs and all(isinstance(x, str) for x in inputs) and len(inputs) <= 2:
        return [(inputs[0], inputs[1] if len(inputs) == 2 else None)], False
    if inputs and all(isinstance(x, list) and 1 <= len(x) <= 2 for x in inputs):
        return [(x[0], x[1] if len(x) == 2 else None) for x in inputs], True
    raise InputError(
        "'inputs' must be a text, a pair [text, text_pair], or a list of [text] and "
        "[text, text_pair] lists: fix its shape."
    )


def _tei_model(registry: Registry, name: str | None, route: str) -> ServedModel:
    if name is not None:
        served = registry.find(name, None, route)
        if served.task not in TEI_TASKS:
            where = "/v1/ner" if served.task == "token_cls" else "its own route"
            raise InputError(
                f"{route} serves embedding, classification and rerank models, and {name!r} is "
                f"a {served.task} model, which TEI has no route for: send it to {where}."
            )
        return served
    found = [m for m in registry.models.values() if m.task in TEI_TASKS]
    if len(found) != 1:
        names = ", ".join(m.name for m in found) or "none"
        raise InputError(
            f"{route} serves the one embedding, classification or rerank model, and this server "
            f"has {len(found)} ({names}): name one ('model' in the body, ?model= for /info)."
        )
    return found[0]


def _info(served: ServedModel, settings: ServeSettings) -> dict[str, Any]:
    from ernie_deploy import __version__

    p: Any = served.predictor
    if served.task == "embedding":
        model_type: dict[str, Any] = {"embedding": {"pooling": p.pooling}}
    else:
        labels = list(getattr(p, "labels", ())) or ["LABEL_0"]
        id2label = {str(i): label for i, label in enumerate(labels)}
        kind = "classifier" if served.task == "seq_cls" else "reranker"
        model_type = {
            kind: {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}
        }
    return {
        "model_id": str(p.model.path),
        "model_sha": None,
        "model_dtype": "float32",
        "served_model_name": served.name,
        "model_type": model_type,
        "max_concurrent_requests": settings.max_queue,
        "max_input_length": p.engine.max_seq_length,
        "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": settings.max_batch_size,
        "max_client_batch_size": settings.max_texts,
        "auto_truncate": settings.truncate,
        "tokenization_workers": settings.workers,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


def tei_tokens(tokenizer: Any, texts: list[str], special: bool) -> list[list[dict[str, Any]]]:
    """TEI's tokens: {id, text, special, start, stop}, with character offsets."""
    out = []
    for t in tokenizer.tokenize(texts):
        strings = tokenizer.tokens_to_strings(t.ids)
        tokens = [
            {"id": int(i), "text": tok, "special": False, "start": int(a), "stop": int(b)}
            for i, tok, (a, b) in zip(t.ids, strings, t.offsets)
        ]
        if special:
            ids, _, prefix = tokenizer.build_inputs(t.ids)
            names = tokenizer.tokens_to_strings(ids)
            wrap = [
                {"id": int(i), "text": n, "special": True, "start": None, "stop": None}
                for i, n in zip(ids, names)
            ]
            tokens = wrap[:prefix] + tokens + wrap[prefix + len(t.ids) :]
        out.append(tokens)
    return out
