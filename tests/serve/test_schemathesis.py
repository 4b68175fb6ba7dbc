"""Schemathesis against the live server's own OpenAPI spec: no generated request gets a 5xx."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.serve.conftest import AUTH, Server

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

# Per operation and mode: a few seconds in all (raise it with ERNIE_DEPLOY_FUZZ_EXAMPLES).
EXAMPLES = int(os.environ.get("ERNIE_DEPLOY_FUZZ_EXAMPLES", "12"))


def test_fuzzed_requests_never_get_a_server_error(server: Server) -> None:
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
            def check(case: object) -> None:
                response = case.call(base_url=server.url, headers=AUTH, timeout=30)  # type: ignore[attr-defined]
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} {response.status_code}: "  # type: ignore[attr-defined]
                        f"{response.text[:300]}"
                    )

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET /health)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:10])
    assert statuses[200] > 0 and sum(n for code, n in statuses.items() if code >= 400) > 0
