"""The batcher's waiting rule: it waits for requests on their way, never for ones that are not."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import ernie_deploy
from ernie_deploy.serve.batcher import Batcher, BatchLimits, QueuedEngine
from ernie_deploy.serve.render import is_small, render

LONG_WAIT_MS = 120_000.0  # far longer than any join below: a held request would fail the test


@pytest.fixture(scope="module")
def ner(lookup_ner: Path) -> Any:
    return ernie_deploy.load(lookup_ner, device="cpu")


def _clone(predictor: Any, engine: QueuedEngine) -> Any:
    import copy

    clone = copy.copy(predictor)
    clone.engine = engine
    return clone


def _run_in_thread(predictor: Any, texts: list[str]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.extend(predictor.predict(texts)), daemon=True)
    thread.start()
    return thread, out


def test_a_lone_request_is_not_held_for_company(ner: Any) -> None:
    batcher = Batcher(
        "ner", ner.engine.model, ner.engine.tokenizer.pad_id, BatchLimits(max_wait_ms=LONG_WAIT_MS)
    )
    batcher.start()
    engine = QueuedEngine(ner.engine, batcher)
    engine.expect()  # admitted: the only request on its way
    thread, out = _run_in_thread(_clone(ner, engine), ["乔丹在北京打球"])
    thread.join(60)
    engine.settle()
    batcher.stop()
    assert not thread.is_alive(), "a lone request was held for company"
    assert [r.to_dict() for r in out] == [r.to_dict() for r in ner.predict(["乔丹在北京打球"])]


def test_an_announced_request_that_sends_no_rows_releases_the_wait(ner: Any) -> None:
    batcher = Batcher(
        "ner", ner.engine.model, ner.engine.tokenizer.pad_id, BatchLimits(max_wait_ms=LONG_WAIT_MS)
    )
    batcher.start()
    quiet, busy = QueuedEngine(ner.engine, batcher), QueuedEngine(ner.engine, batcher)
    quiet.expect()
    busy.expect()
    thread, out = _run_in_thread(_clone(ner, busy), ["科比"])
    quiet.settle()  # e.g. its request failed validation: the batch stops waiting for it
    thread.join(60)
    busy.settle()
    batcher.stop()
    assert not thread.is_alive(), "the batch kept waiting for a request that had ended"
    assert len(out) == 1


def test_hold_for_company_keeps_the_old_wait(ner: Any) -> None:
    batcher = Batcher(
        "ner",
        ner.engine.model,
        ner.engine.tokenizer.pad_id,
        BatchLimits(max_wait_ms=LONG_WAIT_MS, hold_for_company=True),
    )
    batcher.start()
    thread, _ = _run_in_thread(_clone(ner, QueuedEngine(ner.engine, batcher)), ["科比"])
    thread.join(0.5)
    held = thread.is_alive()
    batcher.stop()  # stopping ends every wait: the queued job still runs
    thread.join(60)
    assert held and not thread.is_alive()


def test_render_matches_the_stdlib_encoder() -> None:
    import json

    body = {"model": "m", "results": [{"text": "乔丹", "score": 0.25, "v": [1.5, -2.0]}] * 3}
    assert json.loads(render(body)) == body
    assert is_small(body) and not is_small({"results": list(range(1000))})
