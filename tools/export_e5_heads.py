#!/usr/bin/env python
"""Ship a fine-tuned e5 head (tools/train_e5_heads.py) as a bundled model, checked end to end.

    python tools/export_e5_heads.py ner        [--checkpoint .cache/train/e5-ner/best]
    python tools/export_e5_heads.py sentiment  [--checkpoint .cache/train/e5-sentiment/best]

1. `ernie_deploy.convert.hf.convert_hf` (what `ernie-deploy convert hf` runs: optimum export +
   PyTorch parity, 1e-4) into an fp32 directory; PyTorch's logits on the probe batch are kept
   as `export_check.npz` so `make test` can repeat the check without PyTorch.
   NER first drops the 9,414 pieces its Han-isolating tokenizer can never emit from the
   word-embedding table (`prune_han_joined.drop_han_joined`: 0 tokenization differences on the
   held-out and stress texts, identical PyTorch logits, or the tool stops). A head trained with
   `--crf` keeps its CRF tables (`crf_*.npy`) beside the weights; convert hf and the
   quantizers carry them, so every score below decodes with them;
2. the fp32 model is scored through ernie-deploy's own predictor (tools/evaluate_default_models.py:
   all 5,000 MSRA test sentences with the shipped decode, or the 2,000-review held-out split);
3. dynamic int8 candidates (`ernie_deploy.convert.quantize`, every op type ORT's dynamic mode
   handles, the word-embedding Gather included; per-tensor then per-channel; a word table left
   frozen in training may instead keep its exact 4-bit blocks; or per-channel with each layer's
   feed-forward output MatMul, where dynamic int8 loses most, as weight-only 8-bit blocks) and
   weight-only 8-bit blocks
   (MatMulNBits: closer to fp32; at accuracy_level 4 each activation row is rounded to int8, at
   level 0 it stays fp32; the word table 8-bit, or rounded to 4-bit to fit 12 layers in 40 MB)
   are scored the same way; the first within 0.5 point of fp32 and under
   40 MB is shipped, or with `--choose least-loss` the one of those that lost least
   (`--candidates` limits the list).
   fp32 itself (~110 MB for 6 layers) is over the 40 MB a bundled model may take, so when no
   int8 candidate keeps the metric nothing is shipped and the tool says so;
4. NER: the ERNIE 3.0 guide's seven entity lines through `infer.py`, the guide's two sentences
   joined into one text, and the demo's 3,060-character text (the two sentences x 60, 420
   entities) are checked on the shipped candidate;
5. weights are split into files of at most 19 MiB, `bundle.json` and the model card are written,
   and the directory replaces src/ernie_deploy/models/<name>/ (unless --no-ship).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(ROOT / "src"))

import evaluate_default_models as evaluate  # noqa: E402
from e5_bundle import (  # noqa: E402
    make_bundle,
    size_mb,
    source_bundle,
    trained_prompt,
    training_base,
)
from e5_candidates import (  # noqa: E402
    BATCH_DRIFT_LIMIT,
    CANDIDATES,
    MAX_POINTS_LOST,
    SIZE_LIMIT_MB,
    build_candidate,
    pick,
)
from export_default_models import curve, set_decode  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.cli.test_infer import GUIDE_TOKEN_CLS  # noqa: E402  (the guide's lines, as tested)

NAMES = {"ner": "ner-zh-e5", "sentiment": "sentiment-zh-e5"}
TASKS = {"ner": "token_cls", "sentiment": "seq_cls"}
WORK = ROOT / ".cache" / "export-e5"
GUIDE = (
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
)
GUIDE_ENTITIES = (
    [(0, 2, "LOC"), (6, 8, "LOC"), (12, 14, "LOC")],
    [(0, 2, "PER"), (3, 5, "PER"), (6, 9, "PER"), (10, 12, "PER")],
)


def torch_logits(checkpoint: Path, features: dict[str, np.ndarray], task: str) -> np.ndarray:
    import torch
    from transformers import (
        XLMRobertaForSequenceClassification,
        XLMRobertaForTokenClassification,
    )

    from ernie_deploy.convert.hf_mean_head import classifier_logits

    cls = XLMRobertaForTokenClassification if task == "ner" else XLMRobertaForSequenceClassification
    model = cls.from_pretrained(str(checkpoint)).eval()
    ids, mask = (torch.from_numpy(features[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():
        out = classifier_logits(model, ids, mask, checkpoint)
    return out.numpy().astype(np.float32)


def probe_batch(model_dir: Path) -> dict[str, np.ndarray]:
    from ernie_deploy.convert.verify import probe_features
    from ernie_deploy.tasks.tokenization import Tokenizer

    features = probe_features(Tokenizer.from_dir(model_dir))
    return {k: features[k] for k in ("input_ids", "attention_mask")}


def ort_logits(model_dir: Path, features: dict[str, np.ndarray]) -> np.ndarray:
    from ernie_deploy.runtime import RuntimeConfig, load_model

    model = load_model(model_dir / "model.onnx", RuntimeConfig(device="cpu"))
    return np.asarray(next(iter(model.run(features).values())), dtype=np.float32)


def agreement(ref: np.ndarray, got: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    rows = mask.astype(bool) if ref.ndim == 3 else slice(None)
    return {
        "max_abs_diff": float(np.abs(got - ref)[rows].max()),
        "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1))[rows].mean()),
    }


def score(
    task: str, model_dir: Path, decode: str | None, batch_size: int | None = None
) -> dict[str, Any]:
    if task == "ner":
        return evaluate.evaluate_ner(str(model_dir), decode, batch_size)
    return evaluate.evaluate_sentiment(str(model_dir), batch_size)


def points(task: str, scores: dict[str, Any]) -> float:
    return 100.0 * float(scores["f1"] if task == "ner" else scores["accuracy"])


def guide_checks(model_dir: Path) -> dict[str, Any]:
    """The guide's seven lines (infer.py), the two sentences joined, the demo's long text."""
    import ernie_deploy

    run = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--task_name", "token_cls",
         "--model_path", str(model_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    ner = ernie_deploy.load(str(model_dir), device="cpu")
    joined = "".join(GUIDE)
    want_joined = set(GUIDE_ENTITIES[0]) | {
        (s + len(GUIDE[0]), e + len(GUIDE[0]), t) for s, e, t in GUIDE_ENTITIES[1]
    }
    got_joined = {(e.start, e.end, e.label) for e in ner(joined)[0].entities}
    long_text = joined * 60
    want_long = {
        (s + k * len(joined), e + k * len(joined), t) for k in range(60) for s, e, t in want_joined
    }
    got_long = {(e.start, e.end, e.label) for e in ner(long_text)[0].entities}
    return {
        "guide_lines_exact": run.returncode == 0 and run.stdout == GUIDE_TOKEN_CLS,
        "guide_stdout": run.stdout,
        "joined_found": len(want_joined & got_joined),
        "joined_expected": len(want_joined),
        "joined_extra": len(got_joined - want_joined),
        "long_text_chars": len(long_text),
        "long_text_found": len(want_long & got_long),
        "long_text_expected": len(want_long),
        "long_text_extra": len(got_long - want_long),
    }


def opset(model_dir: Path) -> int:
    import onnx

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def export(
    task: str,
    checkpoint: Path,
    ship: bool,
    only: tuple[str, ...] = tuple(CANDIDATES),
    choose: str = "first",
) -> dict[str, Any]:
    """`choose`: "first" ships the first candidate (in CANDIDATES' order) within MAX_POINTS_LOST
    and the size limit, "least-loss" the one among those that lost least."""
    from pack_e5_4bit import PackFailed

    from ernie_deploy.convert.hf import convert_hf
    from ernie_deploy.convert.verify import batch_drift
    from ernie_deploy.errors import ErnieDeployError

    name, decode = NAMES[task], ("viterbi" if task == "ner" else None)
    load_start = os.getloadavg()[0]  # the card says how busy the machine was while scoring
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fp32 = work / "fp32"
    source, table = checkpoint, None
    if task == "ner":  # its Han-isolating tokenizer never emits 9,414 of the table's pieces
        from prune_han_joined import drop_han_joined, han_joined_pieces

        if han_joined_pieces(json.loads((checkpoint / "tokenizer.json").read_text("utf-8"))):
            source = work / "checkpoint"
            table = drop_han_joined(checkpoint, source)
        else:  # a second stage trained on a table already cut: the first stage's record holds
            table = source_bundle(training_base(checkpoint)).get("table")
    report = convert_hf(source, fp32, task=TASKS[task], max_seq_length=128)
    print("\n".join(report.lines()), flush=True)
    lost = sorted(p.name for p in checkpoint.glob("crf_*.npy") if not (fp32 / p.name).is_file())
    if lost:  # the decode would run without them and score ~2 points lower, silently
        raise SystemExit(f"export_e5_heads: the CRF tables {lost} did not reach {fp32}.")
    set_decode(fp32, decode)
    for extra in ("training_info.json", "import_info.json", "soup_info.json"):  # in bundle.json
        (fp32 / extra).unlink(missing_ok=True)
    features = probe_batch(fp32)
    ref = torch_logits(source, features, task)
    fp32_check = agreement(ref, ort_logits(fp32, features), features["attention_mask"])
    fp32_check["batch_drift"] = batch_drift(fp32 / "model.onnx", features)
    evaluation: dict[str, Any] = {"fp32": score(task, fp32, decode)}
    if task == "ner":
        evaluation["fp32_argmax"] = score(task, fp32, "argmax")
    base = points(task, evaluation["fp32"])
    print(f"fp32: {base:.2f} points, {size_mb(fp32):.1f} MB; probe {fp32_check}", flush=True)
    candidates: dict[str, Any] = {}
    for label in (c for c in CANDIDATES if c in only):
        path = work / label
        try:
            how = build_candidate(label, fp32, path)
        except (ErnieDeployError, PackFailed) as exc:
            candidates[label] = {"refused": str(exc)}
            print(f"{label}: refused: {exc}", flush=True)
            continue
        scores = score(task, path, decode)
        probe = agreement(ref, ort_logits(path, features), features["attention_mask"])
        lost = base - points(task, scores)
        drift = batch_drift(path / "model.onnx", features)
        candidates[label] = {
            **how,
            "size_mb": round(size_mb(path), 2),
            "points_lost": round(lost, 3),
            "probe_vs_pytorch": probe,
            "batch_drift": drift,
            "scores": scores,
        }
        alone = ""
        if drift > BATCH_DRIFT_LIMIT:  # what a caller sending one text at a time would get
            single = score(task, path, decode, batch_size=1)
            candidates[label]["scores_batch_1"] = single
            alone = f", {points(task, single):.2f} at batch 1 (not shipped: its outputs drift)"
        print(
            f"{label}: {points(task, scores):.2f} points ({-lost:+.2f}), {size_mb(path):.1f} MB; "
            f"probe {probe}; batch drift {drift:.3g}{alone}",
            flush=True,
        )
    chosen = pick(candidates, choose)
    evaluation["candidates"] = candidates
    result: dict[str, Any] = {
        "name": name,
        "checkpoint": str(checkpoint),
        "fp32_size_mb": round(size_mb(fp32), 1),
        "fp32_export": {
            "max_abs_diff_convert_hf": float(report.parity.max_abs_diff),
            "opset": opset(fp32),
            **fp32_check,
        },
        "evaluation": evaluation,
        "shipped": chosen,
        "choice": choose,
        "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        **({"table": table} if table else {}),
    }
    if chosen is None:
        (work / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
        raise SystemExit(
            f"no int8 candidate keeps {'F1' if task == 'ner' else 'accuracy'} within "
            f"{MAX_POINTS_LOST} point of fp32 ({base:.2f}) under {SIZE_LIMIT_MB:.0f} MB with outputs "
            "that do not depend on the batch, and fp32 is "
            f"{size_mb(fp32):.0f} MB: nothing shipped; see {work / 'result.json'}"
        )
    shipped = work / chosen
    if task == "ner":
        result["guide"] = guide_checks(shipped)
        print(
            json.dumps({k: v for k, v in result["guide"].items() if k != "guide_stdout"}),
            flush=True,
        )
    np.savez_compressed(shipped / "export_check.npz", **features, pytorch_logits=ref)
    bundle = make_bundle(task, checkpoint, result)
    (shipped / "bundle.json").write_text(
        json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    from model_card_e5 import write_e5_card

    write_e5_card(shipped, task, name, bundle, curve(checkpoint.parent))
    (work / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
    if ship:
        install(shipped, ROOT / "src" / "ernie_deploy" / "models" / name)
    return result


def install(src: Path, target: Path) -> None:
    """Replace the bundled copy whole: copy beside it, then swap."""
    tmp = Path(tempfile.mkdtemp(prefix="." + target.name + ".", dir=target.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".ernie_deploy_cache", "*.ort_cache"))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    print(f"shipped {target.name} -> {target.relative_to(ROOT)} ({size_mb(target):.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument("--checkpoint", type=Path, default=None, help="a best/ or final/ directory")
    p.add_argument("--no-ship", action="store_true", help="stop before replacing the bundled copy")
    p.add_argument(
        "--card-only",
        action="store_true",
        help="rewrite the bundled model's README.md from its bundle.json and the training log",
    )
    p.add_argument(
        "--choose",
        choices=("first", "least-loss"),
        default="first",
        help="among the candidates within 0.5 point and 40 MB: the first in the list's order or "
        "the one that lost least",
    )
    p.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help="comma-separated 8-bit variants to build and score, tried in the tool's order: "
        + ", ".join(CANDIDATES),
    )
    a = p.parse_args(argv)
    only = tuple(c.strip() for c in a.candidates.split(",") if c.strip())
    unknown = [c for c in only if c not in CANDIDATES]
    if unknown or not only:
        print(f"--candidates: name one or more of {', '.join(CANDIDATES)}.", file=sys.stderr)
        return 2
    checkpoint = a.checkpoint or ROOT / ".cache" / "train" / f"e5-{a.task}" / "best"
    if not (checkpoint / "model.safetensors").is_file():
        print(
            f"{checkpoint} has no model.safetensors: train with tools/train_e5_heads.py first.",
            file=sys.stderr,
        )
        return 1
    if prompt := trained_prompt(checkpoint):  # train_e5_heads.py --prompt
        print(
            f"{checkpoint} was trained with --prompt {prompt!r}, which the exported seq_cls head "
            "would not put before its texts: export a head trained without --prompt.",
            file=sys.stderr,
        )
        return 2
    if a.card_only:
        from model_card_e5 import write_e5_card

        shipped = ROOT / "src" / "ernie_deploy" / "models" / NAMES[a.task]
        bundle = json.loads((shipped / "bundle.json").read_text("utf-8"))
        print(write_e5_card(shipped, a.task, NAMES[a.task], bundle, curve(checkpoint.parent)))
        return 0
    t0 = time.time()
    export(a.task, checkpoint, not a.no_ship, only, a.choose)
    print(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
