"""Schemathesis against the live server's own OpenAPI spec: no 5xx, and the spec says what the
server does (schema-valid requests are accepted, schema-invalid ones refused, answers conform)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.serve.conftest import AUTH, Server

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
jsonschema = pytest.importorskip("jsonschema")

# Per operation and mode: a few seconds in all (raise it with ERNIE_DEPLOY_FUZZ_EXAMPLES).
EXAMPLES = int(os.environ.get("ERNIE_DEPLOY_FUZZ_EXAMPLES", "12"))


def test_fuzzed_requests_agree_with_the_schema(server: Server) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(base_url=server.url, headers=AUTH, timeout=30)
                statuses[response.status_code] += 1
                try:  # every built-in check: 5xx, status and body conformance, accept / reject
                    case.validate_response(response, headers=AUTH)
                except BaseException as exc:  # noqa: BLE001 - a failure group, listed below
                    first = next((ln for ln in str(exc).splitlines() if " ST" in ln), str(exc))
                    failures.append(
                        f"{case.method} {case.formatted_path} {response.status_code}"
                        f" {first.strip()}: {str(case.body)[:120]}"
                    )

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /health)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:10])
    assert statuses[200] > 0 and sum(n for code, n in statuses.items() if code >= 400) > 0


# The ten places where the spec and the server disagreed: each body breaks the served schema
# (so a client reading the spec knows not to send it) and the server refuses it.
DISAGREEMENTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/ner", {"texts": ""}),
    ("/v1/classify", {"texts": ["a", "  "]}),
    ("/v1/embed", {"texts": []}),
    ("/v1/tokenize", {"texts": "", "model": "ner"}),
    ("/v1/rerank", {"query": "", "documents": ["a"]}),
    ("/v1/embeddings", {"input": ""}),
    ("/v1/rerank", {"query": "a", "documents": []}),
    ("/v1/embeddings", {"input": "a", "dimensions": 1}),
    ("/v1/tokenize", {"texts": "a"}),  # four models loaded: which tokenizer?
    ("/v1/classify", {"texts": "a", "truncate": 1}),
]


@pytest.mark.parametrize(
    ("path", "body"), DISAGREEMENTS, ids=[f"{p} {b}" for p, b in DISAGREEMENTS]
)
def test_the_schema_refuses_what_the_server_refuses(
    server: Server, path: str, body: dict[str, Any]
) -> None:
    spec = httpx.get(f"{server.url}/openapi.json", headers=AUTH).json()
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**ref, "components": spec["components"]})
    assert list(validator.iter_errors(body)), f"the schema allows {body}"
    r = httpx.post(f"{server.url}{path}", json=body, headers=AUTH)
    assert 400 <= r.status_code < 500, r.text
    good = {**body, **_valid(path)}
    assert not list(validator.iter_errors(good)), good
    assert httpx.post(f"{server.url}{path}", json=good, headers=AUTH).status_code == 200


def _valid(path: str) -> dict[str, Any]:
    """Fields that make each body above valid again (the schema is not simply closed)."""
    return {
        "/v1/ner": {"texts": "乔丹"},
        "/v1/classify": {"texts": "a", "truncate": True},
        "/v1/embed": {"texts": ["a"]},
        "/v1/tokenize": {"texts": "a", "model": "ner"},
        "/v1/rerank": {"query": "a", "documents": ["a"]},
        "/v1/embeddings": {"input": "a", "dimensions": 32},
    }[path]
