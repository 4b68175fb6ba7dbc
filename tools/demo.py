"""`make demo`: the main job — the ERNIE 3.0 guide's command lines on the bundled models.

Runs, as a user would, with nothing downloaded:
  1. `python infer.py --task_name token_cls` on the default NER model (ner-zh-e5: the guide's
     lines),
  2. `python infer.py --task_name seq_cls` on the default classifier (sentiment-zh-e5),
  3. `ernie-deploy predict ner-zh-e5` on mixed Chinese / English / digits text (exact offsets),
  4. a 3,060-character text, windowed rather than truncated (420 entities expected),
  5. the bundled e5-small-zh-en embedding model: a zh/en similarity matrix and a tiny retrieval
     (E5's "query: " / "passage: " prompts picked by name),
  6. `ernie-deploy serve` on the default NER model, one HTTP request, then Ctrl-C.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MIXED = "2008年，姚明在上海的东方体育中心和 Michael Jordan 打NBA表演赛，后来去了北京和重庆。"


def main() -> int:
    from ernie_deploy.runtime.bundled import DEFAULTS

    for task, name in DEFAULTS.items():
        print(f"\n$ python infer.py --task_name {task}   # the bundled default, {name}")
        subprocess.run([sys.executable, str(ROOT / "infer.py"), "--task_name", task], check=True)

    print(f"\n$ ernie-deploy predict {DEFAULTS['token_cls']} '{MIXED}'")
    import ernie_deploy

    ner = ernie_deploy.load(DEFAULTS["token_cls"])
    result = ner(MIXED)[0]
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    assert all(MIXED[e.start : e.end] == e.text for e in result.entities)

    guide = (
        "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。"
        "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。"
    )
    long_text = guide * 60
    found = ner(long_text)[0].entities
    assert all(long_text[e.start : e.end] == e.text for e in found)
    want = {(s + k * len(guide), e, t) for k in range(60) for s, e, t in _guide_entities(guide)}
    got = {(e.start, e.text, e.label) for e in found}
    print(
        f"\n{len(long_text)}-character text (the guide's two texts x 60), max_seq_length 128, "
        f"windowed, not cut: {len(want & got)} of the {len(want)} expected entities found "
        f"({len(got - want)} others); the last three: "
        + ", ".join(f"{e.text} {e.label} [{e.start}, {e.end - 1}]" for e in found[-3:])
    )
    embedding_demo(ernie_deploy)
    server_demo(DEFAULTS["token_cls"])
    return 0


def server_demo(model: str) -> None:
    """`ernie-deploy serve` started as a user starts it, one request, then Ctrl-C."""
    import signal
    import socket
    import time
    import urllib.request

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("\n(server step skipped: pip install 'ernie-deploy[serve]' for it)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ernie_deploy", "serve", f"ner={model}", "--port", str(port)]
    print(f"\n$ ernie-deploy serve ner={model} --port {port}   # then one request, then Ctrl-C")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with {server.returncode}") from None
                time.sleep(0.2)
        body = json.dumps({"texts": [MIXED]}, ensure_ascii=False).encode()
        print(f"$ curl -s {base}/v1/ner -H 'content-type: application/json' -d '{body.decode()}'")
        req = urllib.request.Request(
            base + "/v1/ner", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        ents = answer["results"][0]["entities"]
        print(f'{{"model": "{answer["model"]}", "results": [{{"text": ..., "entities": [')
        print(",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in ents) + "]}]}")
        print(f"(the playground page is at {base}/ while it runs)")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def _guide_entities(text: str) -> list[tuple[int, str, str]]:
    """(start, text, label) of the guide's seven entities in its two sentences joined."""
    names = [("北京", "LOC"), ("重庆", "LOC"), ("成都", "LOC")]
    names += [("乔丹", "PER"), ("科比", "PER"), ("詹姆斯", "PER"), ("姚明", "PER")]
    return [(text.index(name), name, label) for name, label in names]


PASSAGES = [
    "北京烤鸭和涮羊肉都很有名。",
    "Rinse the rice, add water and simmer it for twenty minutes.",
    "今天股市大跌，投资者很紧张。",
    "那名前锋在决赛中打进两球。",
]
QUERIES = ["北京有什么好吃的？", "How do I cook rice?", "足球比赛谁进球了？"]


def embedding_demo(ernie_deploy: object) -> None:
    """Cosine similarities of a few zh/en texts, then each query's best passage."""
    import numpy as np

    emb = ernie_deploy.load("e5-small-zh-en")  # type: ignore[attr-defined]
    print("\n$ ernie-deploy predict e5-small-zh-en --prompt-name passage ...   # cosine similarity")
    docs = np.stack([r.vector for r in emb.predict(PASSAGES, prompt_name="passage")])
    sims = docs @ docs.T
    for text, row in zip(PASSAGES, sims):
        print("  ".join(f"{x:5.2f}" for x in row), "  ", text)
    print("\nretrieval (query: ... against passage: ...):")
    queries = np.stack([r.vector for r in emb.predict(QUERIES, prompt_name="query")])
    for query, row in zip(QUERIES, queries @ docs.T):
        best = int(row.argmax())
        print(f"  {query}  ->  {PASSAGES[best]}  ({row[best]:.3f})")


if __name__ == "__main__":
    sys.exit(main())
