"""PaddleNLP SimpleServing's route: `POST /models/{name}` with `{"data": ..., "parameters": ...}`.

Answers `{"result": ...}` as the ERNIE 3.0 SimpleServing examples' handlers do:

* token_cls: `{"value": [[{"entity", "label", "pos": [start, end]}]], "tokens_label": [...]}`:
  only entities; `pos` is inclusive at both ends as upstream's (`text[start:end + 1]` is the
  entity), but counted in characters of the caller's text (upstream counts tokens, which is
  wrong past the first non-character token). `tokens_label` is each token's tag id, [CLS] and
  [SEP] included (as "O"), without the batch padding upstream adds. Long texts are windowed.
* seq_cls: `{"label": [index], "confidence": [p], "label_name": [name]}` (multi-label: lists per
  text above `prob_limit`); `data.text_pair` classifies pairs (afqmc, LCQMC).
* `parameters.max_seq_len` caps the tokens per sequence; texts over it are truncated as upstream
  does, unless `parameters.truncation` is false (then 422).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from ernie_deploy.errors import InputError
from ernie_deploy.serve import schemas as s
from ernie_deploy.serve.inputs import check_inputs
from ernie_deploy.serve.pairs import pair_logits, scores
from ernie_deploy.serve.registry import Registry
from ernie_deploy.serve.render import answer
from ernie_deploy.serve.routes import ERROR_RESPONSES
from ernie_deploy.serve.settings import ServeSettings


def simple_serving_router(registry: Registry, settings: ServeSettings) -> APIRouter:
    """The SimpleServing route, for NER (token_cls) and classification (seq_cls) models."""
    router = APIRouter(tags=["compatible"], responses=ERROR_RESPONSES)

    @router.post(
        "/models/{name}", response_model=s.SimpleServingResponse, summary="PaddleNLP SimpleServing"
    )
    async def simple_serving(name: str, req: s.SimpleServingRequest) -> Any:
        """SimpleServing's request and answer, for NER (token_cls) and classification models."""
        served = registry.find(name, None, f"/models/{name}")
        if served.task not in ("token_cls", "seq_cls"):
            raise InputError(
                f"Model {name!r} is a {served.task} model and /models/{{name}} serves NER and "
                "classification models (as SimpleServing does): use /v1/embed or /v1/rerank."
            )
        params = req.parameters
        texts = _joined(req.data.text)
        if served.task == "token_cls":
            if req.data.text_pair is not None:
                raise InputError(
                    "data.text_pair is for classification models: send NER texts in data.text."
                )
            texts = check_inputs(texts, settings, windowed=True)
            out = await registry.call(served, lambda p: ner_result(p, texts))
            return await answer({"result": out.value})
        truncate = _flag(params, "truncation", True)
        length = _max_seq_len(params, served.predictor.engine.max_seq_length)
        texts = check_inputs(texts, settings, truncate=truncate)
        pairs = None
        if req.data.text_pair is not None:
            second = check_inputs(_joined(req.data.text_pair), settings, truncate=truncate)
            if len(second) != len(texts):
                raise InputError(
                    f"data.text has {len(texts)} texts and data.text_pair {len(second)}: send one "
                    "text_pair per text."
                )
            pairs = list(zip(texts, second))
        labels = list(served.predictor.labels)  # type: ignore[union-attr]
        limit = params.get("prob_limit", 0.5)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise InputError(f"parameters.prob_limit must be a number, got {limit!r}.")

        def run(p: Any) -> Any:
            p.engine.max_seq_length = length
            logits = pair_logits(p, pairs, truncate) if pairs else p.logits(texts)
            return cls_result(p.multi_label, scores(p, logits), labels, float(limit))

        out = await registry.call(served, run, truncate=truncate)
        return await answer({"result": out.value})

    return router


def _joined(raw: str | list[Any]) -> list[str]:
    """Texts, with texts split into characters (is_split_into_words) joined back."""
    if isinstance(raw, str):
        return [raw]
    return ["".join(t) if isinstance(t, list) else t for t in raw]


def _flag(params: dict[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"parameters.{key} must be true or false, got {value!r}.")
    return value


def _max_seq_len(params: dict[str, Any], model_max: int) -> int:
    value = params.get("max_seq_len", model_max)
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise InputError(f"parameters.max_seq_len must be an integer of at least 8, got {value!r}.")
    return min(value, model_max)


def ner_result(predictor: Any, texts: list[str]) -> dict[str, Any]:
    """SimpleServing's NER answer: entities with inclusive character positions, token tags."""
    outside = predictor.labels.index("O") if "O" in predictor.labels else 0
    value, tokens_label = [], []
    for tags, entities in predictor.tagged(list(texts)):
        value.append(
            [{"pos": [e.start, e.end - 1], "entity": e.text, "label": e.label} for e in entities]
        )
        tokens_label.append([outside, *(int(x) for x in tags), outside])
    return {"value": value, "tokens_label": tokens_label}


def cls_result(multi_label: bool, probs: np.ndarray, labels: list[str], limit: float) -> Any:
    """SimpleServing's classification answer (label indices and confidences)."""
    if not multi_label:
        best = probs.argmax(axis=-1)
        return {
            "label": [int(i) for i in best],
            "confidence": [float(row[i]) for row, i in zip(probs, best)],
            "label_name": [labels[i] for i in best],
        }
    chosen = [[i for i in range(len(labels)) if row[i] > limit] for row in probs]
    return {
        "label": chosen,
        "confidence": [[float(row[i]) for i in c] for row, c in zip(probs, chosen)],
        "label_name": [[labels[i] for i in c] for c in chosen],
    }
