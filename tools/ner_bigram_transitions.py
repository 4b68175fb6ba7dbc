#!/usr/bin/env python
"""Give the bundled e5 NER head tag-bigram transition scores for its Viterbi decode, chosen on dev.

    python tools/ner_bigram_transitions.py [--model ner-zh-e5] [--weights 0,0.25,0.375,0.5,0.625,0.75,1]

The head is a per-token softmax; its decode already forbids invalid BIO steps. This adds
``w * log P(tag_j | tag_i)`` (and start / end terms), the tag bigrams counted on MSRA train
without the dev split (add-one smoothing), as the CRF transition files the decoder reads
(``crf_transitions.npy``, ``crf_start_transitions.npy``, ``crf_end_transitions.npy``).
``w`` is chosen by entity F1 on the same 1,000-sentence dev split the training used (0 is a
candidate: nothing is written unless some w beats it); MSRA test is scored once, for the
chosen w, through the predictor. The guide's checks (seven lines, joined sentences, the
3,060-character text) must still pass, or nothing is written. The files, the grid and both
scores go into the model directory and its bundle.json; re-running starts from the model
without transitions.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(ROOT / "src"))

from e5_heads_data import bio_tags, msra_splits  # noqa: E402
from train_data import NER_LABELS, bmes_entities  # noqa: E402

FILES = ("crf_transitions.npy", "crf_start_transitions.npy", "crf_end_transitions.npy")
Example = tuple[str, list[tuple[int, int, str]]]


def bigram_scores(train: list[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log P(next | tag), log P(first tag), log P(end | tag): add-one counts over BIO tags."""
    n, lid = len(NER_LABELS), {lab: i for i, lab in enumerate(NER_LABELS)}
    pairs, first, last = np.ones((n, n)), np.ones(n), np.ones(n)
    for text, gold in train:
        tags = [lid[t] for t in bio_tags(text, gold)]
        if tags:
            first[tags[0]] += 1
            last[tags[-1]] += 1
            np.add.at(pairs, (tags[:-1], tags[1:]), 1)
    return (
        np.log(pairs / pairs.sum(1, keepdims=True)),
        np.log(first / first.sum()),
        np.log(last / (last + pairs.sum(1))),
    )


def f1_with(model_dir: Path, scores: tuple[np.ndarray, ...] | None, data: list[Example]) -> float:
    import ernie_deploy
    from ernie_deploy.tasks.metrics import entity_prf

    for name in FILES:
        (model_dir / name).unlink(missing_ok=True)
    if scores is not None:
        for name, values in zip(FILES, scores):
            np.save(model_dir / name, values)
    ner = ernie_deploy.load(str(model_dir), device="cpu")
    results = ner.predict([text for text, _ in data])
    pred = [[(e.start, e.end, e.label) for e in r.entities] for r in results]
    return float(entity_prf([gold for _, gold in data], pred).f1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", default="ner-zh-e5", help="a bundled model name")
    p.add_argument("--weights", default="0,0.25,0.375,0.5,0.625,0.75,1")
    a = p.parse_args(argv)
    target = ROOT / "src" / "ernie_deploy" / "models" / a.model
    if not (target / "bundle.json").is_file():
        print(
            f"{target} holds no bundle.json: pass a bundled model's name (--model).",
            file=sys.stderr,
        )
        return 2
    bundle = json.loads((target / "bundle.json").read_text("utf-8"))
    try:
        weights = [float(w) for w in a.weights.split(",")]
    except ValueError:
        print(
            f"--weights {a.weights!r}: pass numbers separated by commas, e.g. 0,0.5,1.",
            file=sys.stderr,
        )
        return 2
    splits = {  # the training run's own split (tools/e5_heads_data.prepare_ner, seed 42)
        k: [(text, bmes_entities(tags)) for text, tags in v]
        for k, v in msra_splits(seed=42, dev_size=1000).items()
    }
    train, dev = splits["train"], splits["dev"]
    log_t, log_s, log_e = bigram_scores(train)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / a.model
        shutil.copytree(target, work, ignore=shutil.ignore_patterns(*FILES))
        grid = {}
        for w in weights:
            scores = None if w == 0 else (w * log_t, w * log_s, w * log_e)
            grid[w] = f1_with(work, scores, dev)
            print(f"dev F1 with weight {w}: {grid[w]:.4f}", flush=True)
        best = max(weights, key=lambda w: (grid[w], -w))  # ties keep the smaller weight
        if best == 0 or grid[best] <= grid.get(0.0, -1.0):
            print("no weight beats the plain decode on dev: nothing written")
            return 0
        chosen = (best * log_t, best * log_s, best * log_e)
        test_plain = f1_with(work, None, splits["test"])
        test_f1 = f1_with(work, chosen, splits["test"])
        from export_e5_heads import guide_checks, install

        guide = {k: v for k, v in guide_checks(work).items() if k != "guide_stdout"}
        print(json.dumps(guide), flush=True)
        if not (
            guide["guide_lines_exact"]
            and guide["joined_found"] == guide["joined_expected"]
            and guide["long_text_found"] >= 410
        ):
            print("the guide's checks fail with these transitions: nothing written")
            return 1
        record: dict[str, Any] = {
            "what": "w * log P(tag_j | tag_i) (start, end alike) from MSRA train tag bigrams "
            "(dev excluded, add-one), added by the Viterbi decode",
            "weight": best,
            "dev_f1_by_weight": {str(w): round(f, 4) for w, f in grid.items()},
            "msra_test_f1_without": round(test_plain, 4),
            "msra_test_f1_with": round(test_f1, 4),
            "guide": guide,
        }
        bundle["transitions"] = record
        bundle["metrics"]["msra_test_f1_plain_viterbi"] = round(test_plain, 4)
        bundle["metrics"]["msra_test_f1"] = round(test_f1, 4)
        summary = re.sub(r"entity F1 [0-9.]+", f"entity F1 {test_f1:.4f}", bundle["summary"])
        bundle["summary"] = summary.replace(", viterbi)", ", viterbi + tag-bigram transitions)")
        (work / "bundle.json").write_text(
            json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        install(work, target)
    print(
        f"{a.model}: weight {best} (dev F1 {grid[best]:.4f} vs {grid.get(0.0, float('nan')):.4f} "
        f"plain); MSRA test F1 {test_f1:.4f} (plain {test_plain:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
