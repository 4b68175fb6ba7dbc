"""Prompts (E5's "query: " / "passage: "): read from the model directory, chosen per call or request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import ernie_deploy
from ernie_deploy.errors import ConfigError, InputError
from ernie_deploy.serve import ServeSettings
from tests._model_fixtures import RefModel
from tests.serve.test_app import run_app

TEXTS = ["北京的涮肉", "New York in 2008"]
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def e5_like(bert_embed: RefModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prompts") / "emb"
    shutil.copytree(bert_embed.path, d)
    (d / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS, "default_prompt_name": None}), encoding="utf-8"
    )
    return d


def test_prompt_is_put_before_each_text_and_results_keep_the_text(e5_like: Path) -> None:
    emb = ernie_deploy.load(e5_like, device="cpu")
    assert emb.prompts == PROMPTS and emb.prompt_name is None
    plain = emb.predict(TEXTS)
    asked = emb.predict(TEXTS, prompt_name="query")
    by_hand = emb.predict([PROMPTS["query"] + t for t in TEXTS])
    assert [r.text for r in asked] == TEXTS
    for a, b, c in zip(asked, by_hand, plain):
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)
        assert not np.allclose(a.vector, c.vector, atol=1e-4)  # the prompt changes the vector
    passage = ernie_deploy.load(e5_like, device="cpu", prompt_name="passage")
    np.testing.assert_allclose(
        passage.predict(TEXTS)[0].vector, emb.predict(["passage: " + TEXTS[0]])[0].vector, atol=1e-6
    )
    with pytest.raises(InputError, match="Unknown prompt_name 'doc'.*'query', 'passage'"):
        emb.predict(TEXTS, prompt_name="doc")
    with pytest.raises(InputError, match="Unknown prompt_name"):
        ernie_deploy.load(e5_like, device="cpu", prompt_name="doc")


def test_default_prompt_and_bad_config(e5_like: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(e5_like, d)
    config = d / "config_sentence_transformers.json"
    config.write_text(json.dumps({"prompts": PROMPTS, "default_prompt_name": "query"}), "utf-8")
    assert ernie_deploy.load(d, device="cpu").prompt_name == "query"
    config.write_text(json.dumps({"prompts": ["query: "]}), "utf-8")
    with pytest.raises(ConfigError, match="must map prompt names to prefixes"):
        ernie_deploy.load(d, device="cpu")


def test_server_routes_take_prompt_name_and_input_type(e5_like: Path) -> None:
    emb = ernie_deploy.load(e5_like, device="cpu")
    want_query = [r.vector.tolist() for r in emb.predict(TEXTS, prompt_name="query")]
    want_passage = [r.vector.tolist() for r in emb.predict(TEXTS, prompt_name="passage")]

    async def scenario(app: Any, client: httpx.AsyncClient) -> None:
        async def native(**extra: Any) -> list[list[float]]:
            r = await client.post("/v1/embed", json={"texts": TEXTS, **extra})
            assert r.status_code == 200, r.text
            return [row["embedding"] for row in r.json()["results"]]

        for got, want in [
            (await native(prompt_name="query"), want_query),
            (await native(input_type="search_query"), want_query),
            (await native(input_type="document"), want_passage),
        ]:
            np.testing.assert_allclose(got, want, atol=1e-5)
        tei = await client.post(
            "/embed", json={"inputs": TEXTS, "prompt_name": "passage", "normalize": emb.normalize}
        )
        np.testing.assert_allclose(tei.json(), want_passage, atol=1e-5)
        bad = await client.post("/v1/embed", json={"texts": TEXTS, "prompt_name": "doc"})
        assert bad.status_code == 422 and "Unknown prompt_name" in bad.json()["error"]["message"]

    run_app({"emb": emb}, ServeSettings(), scenario)


def test_input_type_without_a_matching_prompt_is_no_prompt(bert_embed: RefModel) -> None:
    from ernie_deploy.serve.inputs import prompt_for

    plain = ernie_deploy.load(bert_embed.path, device="cpu")  # names no prompts
    assert prompt_for(plain, None, "search_document") is None  # Cohere's clients always send it
    with pytest.raises(InputError, match="Unknown prompt_name 'query'.*none"):
        prompt_for(plain, "query", None)
