"""The playground page without a browser: when `GET /` serves it, its files, headers and script."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy.errors import ConfigError
from ernie_deploy.serve import ServeSettings, create_app
from ernie_deploy.serve.playground import FILES, playground_router, read_static
from ernie_deploy.serve.settings import build_settings, is_loopback


@pytest.fixture(scope="module")
def models(lookup_ner: Path) -> dict[str, Any]:
    return {"ner": ernie_deploy.load(lookup_ner, device="cpu")}


def get(
    models: dict[str, Any], settings: ServeSettings, path: str, method: str = "GET"
) -> httpx.Response:
    """One request to a fresh app (outside its lifespan: the page needs no model running)."""

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(models, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_playground_is_on_by_default_only_on_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert ServeSettings(host=host).playground_on is loopback
    assert ServeSettings(host=host, playground=True).playground_on is True
    assert ServeSettings(host=host, playground=False).playground_on is False


def test_playground_setting_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="playground must be true or false"):
        build_settings({"playground": "yes"})
    assert build_settings({"playground": False}).playground is False


def test_page_and_its_files_are_served_with_a_strict_policy(models: dict[str, Any]) -> None:
    page = get(models, ServeSettings(), "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.text == read_static("index.html").decode("utf-8")
    for name in ("playground.js", "playground.css"):
        asset = get(models, ServeSettings(), f"/playground/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"] == FILES[name]
        assert f'"playground/{name}"' in page.text
    assert "get" not in get(models, ServeSettings(), "/openapi.json").json()["paths"].get("/", {})


def test_page_is_off_when_binding_elsewhere_or_told(models: dict[str, Any]) -> None:
    # no GET / at all (TEI's POST / may still answer the path: 405 for GET)
    for settings in (ServeSettings(host="0.0.0.0"), ServeSettings(playground=False)):
        off = get(models, settings, "/")
        assert off.status_code in (404, 405) and "<html" not in off.text.lower()
    assert (
        get(models, ServeSettings(playground=False), "/playground/playground.js").status_code == 404
    )
    assert get(models, ServeSettings(host="0.0.0.0", playground=True), "/").status_code == 200


def test_page_routes_take_get_only() -> None:
    # POST / belongs to other API families (TEI); the playground must not claim it.
    routes = playground_router().routes
    assert {r.path for r in routes} == {
        "/",
        "/playground/playground.js",
        "/playground/playground.css",
    }
    assert all(r.methods == {"GET"} for r in routes)  # type: ignore[attr-defined]


def test_page_loads_nothing_from_elsewhere_and_never_parses_data_as_html() -> None:
    html = read_static("index.html").decode("utf-8")
    script = read_static("playground.js").decode("utf-8")
    style = read_static("playground.css").decode("utf-8")
    for text in (html, script, style):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I)
        assert "@import" not in text
    # Inserting text is textContent / append(string) only.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    # The key is read from its field for each call and kept nowhere else.
    for store in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert store not in script


def test_serve_flag_sets_the_playground(monkeypatch: pytest.MonkeyPatch) -> None:
    from ernie_deploy import cli
    from ernie_deploy.serve import run

    seen: list[ServeSettings] = []

    def fake_serve(
        models: Any, settings: ServeSettings, log_level: str = "info", sock: Any = None
    ) -> int:
        seen.append(settings)
        return 0

    class Bound:  # no real port taken
        def __init__(self, port: int) -> None:
            self.port = port

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(run, "bind", lambda host, port: Bound(port))
    monkeypatch.setattr(run, "load_models", lambda specs, notify: {})
    monkeypatch.setattr(run, "serve", fake_serve)
    runner = CliRunner()
    for args, expected in (
        ([], True),
        (["--no-playground"], False),
        (["--host", "0.0.0.0"], False),
        (["--host", "0.0.0.0", "--playground"], True),
    ):
        result = runner.invoke(cli.app, ["serve", "ner=ner-zh", *args])
        assert result.exit_code == 0, result.output
        assert seen[-1].playground_on is expected
    assert "playground: http://127.0.0.1:8000/" in runner.invoke(cli.app, ["serve", "x"]).output
