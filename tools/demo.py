"""`make demo`: the main job — the ERNIE 3.0 guide's command lines on the bundled models.

Runs, as a user would, with nothing downloaded:
  1. `python infer.py --task_name token_cls` on the bundled ner-zh model (the guide's lines),
  2. `python infer.py --task_name seq_cls` on the bundled sentiment-zh model,
  3. `ernie-deploy predict ner-zh` on mixed Chinese / English / digits text (exact offsets, jsonl),
  4. a 3,000-character text, windowed rather than truncated,
  5. the bundled e5-small-zh-en embedding model: a zh/en similarity matrix and a tiny retrieval
     (E5's "query: " / "passage: " prompts picked by name).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MIXED = "2008年，姚明在上海的东方体育中心和 Michael Jordan 打NBA表演赛，后来去了北京和重庆。"


def main() -> int:
    for task, name in (("token_cls", "ner-zh"), ("seq_cls", "sentiment-zh")):
        print(f"\n$ python infer.py --task_name {task}   # the bundled {name} model")
        subprocess.run([sys.executable, str(ROOT / "infer.py"), "--task_name", task], check=True)

    print(f"\n$ ernie-deploy predict ner-zh '{MIXED}'")
    import ernie_deploy

    ner = ernie_deploy.load("ner-zh")
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
    print(
        f"\n{len(long_text)}-character text (the guide's two texts x 60), max_seq_length 128, "
        f"windowed, not cut: {len(found)} entities; the last three: "
        + ", ".join(f"{e.text} {e.label} [{e.start}, {e.end - 1}]" for e in found[-3:])
    )
    embedding_demo(ernie_deploy)
    return 0


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
