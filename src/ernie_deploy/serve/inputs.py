"""Request input limits: texts and characters per request, characters per text; checked first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ernie_deploy.errors import InputError, InputTooLongError
from ernie_deploy.serve.settings import ServeSettings
from ernie_deploy.tasks.batching import check_texts, plural


def check_inputs(
    texts: str | Sequence[str],
    settings: ServeSettings,
    *,
    truncate: bool = False,
    windowed: bool = False,
    what: str = "text",
) -> list[str]:
    """The request's texts as a list, within the server's limits.

    Empty texts raise EmptyInputError (400), a lone surrogate InputEncodingError (422). More than
    `max_texts`, or more than `max_request_chars` in all, raise InputError (422). A text
    over `max_chars` is cut to it when `truncate` (the model then truncates its tokens as asked),
    else it raises InputTooLongError (422) naming the limit; `windowed` (NER) only changes the
    advice, since NER windows long texts but still within the character limit.
    """
    out = check_texts(texts, what=what)  # empty texts, lone surrogates (JSON lets "\udfff" in)
    if len(out) > settings.max_texts:
        raise InputError(
            f"The request has {len(out)} {plural(what)} but the server takes at most "
            f"{settings.max_texts} per request: split it into several requests."
        )
    limit = settings.max_chars
    for i, text in enumerate(out):
        if len(text) <= limit:
            continue
        if truncate:
            out[i] = text[:limit]
            continue
        fix = "split it" if windowed else 'shorten it or send "truncate": true'
        raise InputTooLongError(
            f"{what.capitalize()} {i} has {len(text)} characters but the server takes at most "
            f"{limit} per {what}: {fix}."
        )
    total = sum(len(t) for t in out)
    if total > settings.max_request_chars:
        raise InputError(
            f"The request's {plural(what)} hold {total} characters but the server takes at most "
            f"{settings.max_request_chars} per request: split it into several requests, or start "
            "the server with a larger --max-request-chars."
        )
    return out


_QUERY_TYPES = ("query", "search_query")


def prompt_for(predictor: Any, prompt_name: str | None, input_type: str | None) -> str | None:
    """The embedding prompt a request asks for: `prompt_name` (one sentence if the model has no
    such prompt), else its `input_type` mapped to the model's query / passage prompt, when it
    has one (clients such as Cohere's send input_type to every model); None: the default."""
    if prompt_name is not None:
        return str(predictor.check_prompt(prompt_name))
    if input_type is None:
        return None
    wanted = ("query",) if input_type in _QUERY_TYPES else ("passage", "document")
    return next((name for name in wanted if name in predictor.prompts), None)
