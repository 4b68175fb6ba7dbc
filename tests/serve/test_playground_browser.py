"""The playground in headless chromium against the real `ernie-deploy serve`: spans equal the API's.

The server is started as users start it, with the bundled ner-zh and sentiment-zh models (and
tiny embedding / rerank models when torch is there to build them) and an API key, which the
test types into the page. Each test compares what the page draws with the API's own answer.
`ERNIE_DEPLOY_DOCS_SCREENSHOT=1` also writes the README's docs/playground-ner.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve._webdriver import Browser, chromium, find_browser
from tests.serve.conftest import API_KEY, AUTH, Server, free_port, start_server

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="Debian's chromium and chromium-driver are not installed: `make test` installs them "
    "when run as root (apt-get install chromium chromium-driver).",
)

GUIDE = "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。"
GUIDE_2 = "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。"
# Astral characters (2 UTF-16 units each, a ZWJ family of 5 code points) before the entities.
MIXED = "😀🎉 2008年，姚明👨‍👩‍👧在上海的东方体育中心和 Michael Jordan 打NBA表演赛🏀，后来去了北京和重庆。"
XSS = (
    '<img src=x onerror="window.__xss=1">北京的涮肉，<script>window.__xss=2</script>'
    "重庆的火锅，<b onmouseover=window.__xss=3>成都</b>的小吃"
)
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "playground-ner.png"

# Every marked span: its text, label, offsets, and the code points of the text before it.
SPANS = """
const view = document.querySelector('#ner-view');
const spans = [];
let before = '';
for (const node of view.childNodes) {
  if (node.nodeType === Node.ELEMENT_NODE && node.matches('mark.entity')) {
    spans.push({text: node.textContent, label: node.dataset.label,
                start: Number(node.dataset.start), end: Number(node.dataset.end),
                at: Array.from(before).length});
  }
  before += node.textContent;
}
return {spans, text: view.textContent, skipped: view.dataset.skipped};
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """ner-zh and sentiment-zh, plus tiny embedding and rerank models when torch can build them."""
    args = ["ner=ner-zh", "cls=sentiment-zh"]
    for name, fixture in (("emb", "bert_embed"), ("rr", "xlmr_rerank")):
        with suppress(pytest.skip.Exception):
            args.append(f"{name}={request.getfixturevalue(fixture).path}")
    log = tmp_path_factory.mktemp("playground") / "server.log"
    srv = start_server([*args, "--api-key", API_KEY, "--device", "cpu"], log)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert BROWSER is not None
    with chromium(*BROWSER, port=free_port(), width=1200, height=1000) as b:
        yield b


@pytest.fixture()
def page(server: Server, browser: Browser) -> Iterator[Browser]:
    """The playground, opened and unlocked with the API key typed into its field; afterwards,
    the page's console must hold no error (script error, policy violation, failed load)."""
    browser.get(f"{server.url}/")
    status = browser.find("#models-status")
    browser.wait("return !arguments[0].textContent.startsWith('Loading')", status)
    assert browser.text(status) == "This server needs an API key: enter it above."
    browser.send_keys(browser.find("#api-key"), API_KEY + "\ue004")  # then Tab: 'change'
    browser.wait("return document.body.dataset.ready")
    assert all("status of 401" in e for e in browser.console_errors())  # the first, keyless call
    yield browser
    assert browser.console_errors() == []


def submit(b: Browser, panel: str) -> None:
    """Click the panel's button and wait until its answer is drawn."""
    calls = b.run(f"return document.querySelector('#panel-{panel}').dataset.calls || '0'")
    b.click(b.find(f"#panel-{panel} button[type=submit]"))
    b.wait(f"return (document.querySelector('#panel-{panel}').dataset.calls || '0') !== '{calls}'")


def retype(b: Browser, css: str, text: str) -> None:
    field = b.find(css)
    b.clear(field)
    b.send_keys(field, text)
    assert b.run("return arguments[0].value", field) == text


def api(server: Server, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.url}{path}", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def check_ner(b: Browser, server: Server, text: str, typed: bool = True) -> list[dict[str, Any]]:
    """Type `text` (unless it is in place), submit, check the spans against /v1/ner's entities."""
    if typed:
        retype(b, "#ner-text", text)
    submit(b, "ner")
    drawn = b.run(SPANS)
    entities = api(server, "/v1/ner", {"texts": [text], "model": "ner"})["results"][0]["entities"]
    assert entities, "the model found no entity: the check would be empty"
    assert drawn["text"] == text  # the labels are CSS, not text: the view reads as the input
    assert drawn["skipped"] == "0"
    assert [(s["text"], s["label"]) for s in drawn["spans"]] == [
        (e["text"], e["label"]) for e in entities
    ]
    for span, entity in zip(drawn["spans"], entities):
        assert span["start"] == span["at"] == entity["start"]
        assert span["end"] == entity["end"]
    return entities


def test_guide_sentence_is_highlighted_as_the_api_answers(
    page: Browser, server: Server, tmp_path: Path
) -> None:
    entities = check_ner(page, server, GUIDE)
    assert [(e["text"], e["label"]) for e in entities] == [
        ("北京", "LOC"),
        ("重庆", "LOC"),
        ("成都", "LOC"),
    ]
    legend = page.run(
        "return [...document.querySelectorAll('#ner-legend .legend-item')].map(i => i.textContent)"
    )
    assert legend == ["PER0", "ORG0", "LOC3"]
    # Latency, the curl line (the key named, not written out) and the raw JSON.
    status = page.text(page.find("#panel-ner .call-status"))
    assert re.fullmatch(r"POST /v1/ner → 200 OK in \d+ ms", status), status
    curl = page.run("return document.querySelector('#panel-ner .call-curl').textContent")
    assert API_KEY not in curl and "$ERNIE_DEPLOY_API_KEY" in curl
    page.click(page.find("#panel-ner .call-raw summary"))
    raw = page.text(page.find("#panel-ner .call-json"))
    assert json.loads(raw) == api(server, "/v1/ner", {"texts": [GUIDE], "model": "ner"})
    if shutil.which("curl") and shutil.which("bash"):
        env = {**os.environ, "ERNIE_DEPLOY_API_KEY": API_KEY}
        ran = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, env=env)
        assert json.loads(ran.stdout) == json.loads(raw)
    # The key stays in its field only.
    stored = "return [localStorage.length, sessionStorage.length, document.cookie]"
    assert page.run(stored) == [0, 0, ""]
    assert page.screenshot(tmp_path / "ner-guide.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixed_text_with_emoji_lines_up(page: Browser, server: Server, tmp_path: Path) -> None:
    entities = check_ner(page, server, MIXED)
    assert any(e["start"] > 10 for e in entities)  # after the emoji family
    page.screenshot(tmp_path / "ner-mixed.png")


def test_markup_in_text_is_shown_not_run(page: Browser, server: Server, tmp_path: Path) -> None:
    check_ner(page, server, XSS)
    page.run("return new Promise(r => setTimeout(r, 300))")  # time for an image error to fire
    assert page.run("return window.__xss === undefined")
    inserted = "return document.querySelectorAll('#panel-ner img, #panel-ner script, #panel-ner b')"
    assert page.run(inserted + ".length") == 0
    page.click(page.find("#panel-ner .call-raw summary"))
    assert "<script>window.__xss=2</script>" in page.text(page.find("#panel-ner .call-json"))
    page.screenshot(tmp_path / "ner-markup.png")


def test_docs_screenshot_of_the_guide_sentences(
    page: Browser, server: Server, tmp_path: Path
) -> None:
    check_ner(page, server, f"{GUIDE}\n{GUIDE_2}")
    shot = page.screenshot(tmp_path / "playground-ner.png")
    if os.environ.get("ERNIE_DEPLOY_DOCS_SCREENSHOT"):
        DOCS_PNG.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_PNG)


def test_long_text_scrolls_and_lines_up(page: Browser, server: Server) -> None:
    text = "\n".join([GUIDE, MIXED, GUIDE_2] * 12)  # past the model's 128 tokens: windowed
    page.run("arguments[0].value = arguments[1]", page.find("#ner-text"), text)
    entities = check_ner(page, server, text, typed=False)
    assert len(entities) > 30
    view = "document.querySelector('#ner-view')"
    assert page.run(f"return {view}.scrollHeight > {view}.clientHeight")
    assert page.run(f"return getComputedStyle({view}).overflowY") == "auto"


def test_api_errors_are_shown(page: Browser) -> None:
    retype(page, "#ner-text", " ")
    submit(page, "ner")
    error = page.text(page.find("#panel-ner .call-error"))
    assert error.endswith(".") and "empty" in error.lower()
    assert re.match(r"POST /v1/ner → 400 ", page.text(page.find("#panel-ner .call-status")))
    assert page.run("return document.querySelector('#panel-ner .output').hidden")
    assert all("status of 400" in e for e in page.console_errors())


def test_classification_bars(page: Browser, server: Server, tmp_path: Path) -> None:
    page.click(page.find("#tabs button[data-panel=classify]"))
    text = "这家餐厅的菜很好吃，服务也很周到。"
    retype(page, "#classify-text", text)
    retype(page, "#classify-k", "2")
    submit(page, "classify")
    bars = page.run(
        "return [...document.querySelectorAll('#classify-bars .bar-row')].map(r => "
        "[r.querySelector('.bar-label').textContent, r.querySelector('.bar-value').textContent, "
        "r.classList.contains('chosen')])"
    )
    result = api(server, "/v1/classify", {"texts": [text], "model": "cls", "top_k": 2})["results"][
        0
    ]
    assert bars == [
        [t["label"], f"{t['score']:.3f}", t["label"] == result["label"]] for t in result["top_k"]
    ]
    page.screenshot(tmp_path / "classify.png")


def test_embedding_heat_map(page: Browser, server: Server, tmp_path: Path) -> None:
    if not page.run("return !document.querySelector('#tabs button[data-panel=embed]').disabled"):
        pytest.skip("no embedding model served (building the tiny one needs torch)")
    page.click(page.find("#tabs button[data-panel=embed]"))
    texts = ["北京的涮肉很有名。", "重庆的火锅很辣。", "乔丹是篮球运动员。"]
    retype(page, "#embed-texts", "\n".join(texts))
    submit(page, "embed")
    cells = page.run(
        "return [...document.querySelectorAll('#embed-heatmap td')].map(c => Number(c.dataset.value))"
    )
    vectors = np.array(
        [r["embedding"] for r in api(server, "/v1/embed", {"texts": texts})["results"]]
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(cells).reshape(3, 3), unit @ unit.T, atol=1e-5)
    page.screenshot(tmp_path / "embed.png")


def test_rerank_list(page: Browser, server: Server, tmp_path: Path) -> None:
    if not page.run("return !document.querySelector('#tabs button[data-panel=rerank]').disabled"):
        pytest.skip("no rerank model served (building the tiny one needs torch)")
    page.click(page.find("#tabs button[data-panel=rerank]"))
    submit(page, "rerank")
    query = page.run("return document.querySelector('#rerank-query').value")
    docs = page.run("return document.querySelector('#rerank-docs').value").split("\n")
    drawn = page.run(
        "return [...document.querySelectorAll('#rerank-list li')].map(li => "
        "[Number(li.dataset.index), li.querySelector('.doc').textContent, "
        "li.querySelector('.bar-value').textContent])"
    )
    hits = api(server, "/v1/rerank", {"query": query, "documents": docs})["results"]
    assert drawn == [[h["index"], docs[h["index"]], f"{h['relevance_score']:.3f}"] for h in hits]
    page.screenshot(tmp_path / "rerank.png")
