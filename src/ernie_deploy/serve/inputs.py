"""Request input limits: texts per request and characters per text, checked before queueing."""

from __future__ import annotations

from collections.abc import Sequence

from ernie_deploy.errors import InputError, InputTooLongError
from ernie_deploy.serve.settings import ServeSettings
from ernie_deploy.tasks.batching import check_texts


def check_inputs(
    texts: str | Sequence[str],
    settings: ServeSettings,
    *,
    truncate: bool = False,
    windowed: bool = False,
    what: str = "text",
) -> list[str]:
    """The request's texts as a list, within the server's limits.

    Empty texts raise EmptyInputError (400). More than `max_texts` raise InputError (422). A text
    over `max_chars` is cut to it when `truncate` (the model then truncates its tokens as asked),
    else it raises InputTooLongError (422) naming the limit; `windowed` (NER) only changes the
    advice, since NER windows long texts but still within the character limit.
    """
    out = check_texts(texts, what=what)
    if len(out) > settings.max_texts:
        raise InputError(
            f"The request has {len(out)} {what}s but the server takes at most "
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
    return out
