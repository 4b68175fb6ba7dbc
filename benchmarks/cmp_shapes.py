"""Batch size × sequence length: ours vs raw session.run at 1 / 8 / 32 texts × 32 / 128 / 512 tokens.

The ERNIE 3.0 medium-shaped model (token_cls by default), texts of exactly L - 2 Chinese
characters (one token each, so every row is exactly L tokens and nothing is padded), our
predictor loaded with `batch_size` = B, and the raw session over the same batches built
beforehand. Each cell runs about `--tokens` tokens (at least one batch); the two contenders
of a cell run interleaved; cells run one after another. Writes the section "shapes".

    python benchmarks/cmp_shapes.py [--quick] [--task token_cls]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402
import _ours  # noqa: E402

SECTION = "shapes"
BATCHES = (1, 8, 32)
LENGTHS = (32, 128, 512)
OURS, RAW = "ours", "raw session.run"


def cell_texts(batch: int, length: int, tokens: int) -> list[str]:
    """Enough texts of `length` tokens for about `tokens` tokens, a whole number of batches."""
    n = max(batch, math.ceil(tokens / length / batch) * batch)
    return _data.fixed_length_texts(n, length - 2, seed=length)


def factories(
    model_dir: Path, task: str, batch: int, texts: list[str]
) -> dict[str, Callable[[], h.Contender]]:
    def ours() -> h.Contender:
        p = _ours.load(model_dir, task, max(LENGTHS), batch)
        return h.Contender(OURS, p.predict)

    def raw() -> h.Contender:
        rb = _ours.raw_batches(_ours.load(model_dir, task, max(LENGTHS), batch), texts)
        return h.Contender(RAW, rb.run)

    return {OURS: ours, RAW: raw}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=2, seconds=150)
    p.add_argument("--task", default="token_cls", choices=("token_cls", "seq_cls"))
    p.add_argument("--tokens", type=int, help="tokens per cell and repeat [1024; quick 512]")
    args = h.finish_args(p.parse_args(argv), repeats=2)
    args.tokens = args.tokens or (512 if args.quick else 1024)
    machine = c.machine_line()
    c.progress(f"machine: {machine}")
    shape = _models.shape_for(args.quick)
    model_dir = _models.ernie_onnx(args.task, shape)
    h.start_clock(args)
    rows = []
    goals_text = []
    for length in LENGTHS:
        for batch in BATCHES:
            if h.past_deadline(args):
                rows.append([str(batch), str(length), "skipped (time budget)"] + [""] * 4)
                continue
            texts = cell_texts(batch, length, args.tokens)
            made, missing = h.make_all(factories(model_dir, args.task, batch, texts), "shapes")
            if missing:
                raise SystemExit(f"cannot load the model: {missing}")
            tokens = len(texts) * length
            label = f"B={batch} L={length}"
            m = h.measure(made, texts, tokens, args.repeats, texts[:batch], label, args.deadline)
            batches = len(texts) // batch
            ms = c.Spread.of([w * 1000 / batches for w in m.runs[OURS].walls])
            ratio = m.speedup(OURS, RAW)
            rows.append(
                [
                    str(batch),
                    str(length),
                    str(len(texts)),
                    c.Spread.of(m.tokens_per_s(OURS)).fmt(0),
                    ms.fmt(1),
                    c.Spread.of(m.tokens_per_s(RAW)).fmt(0),
                    h.fmt_ratio(ratio) + (" (cut)" if m.cut else ""),
                ]
            )
            goals_text.append((batch, length, ratio.median))
    lines = h.section_head(
        "## Batch size × sequence length (ours vs raw session.run)", args, "cmp_shapes.py", machine
    )
    lines += [
        f"Model: ERNIE {args.task}, {shape.describe()}, random init (converted with "
        "`convert paddle`). Texts of exactly L - 2 Chinese characters (L tokens with "
        f"[CLS]/[SEP], no padding); about {args.tokens:,} tokens per cell and repeat; "
        f"{args.repeats} repeats, ours and raw interleaved within each cell; a cell marked "
        "(cut) ran fewer repeats, the time budget (--max-seconds) being spent.",
        "",
        c.table(
            [
                "batch",
                "seq len",
                "texts",
                "ours tokens/s",
                "ours ms / batch",
                "raw session.run tokens/s",
                "ours ÷ raw",
            ],
            rows,
        ),
        "",
    ]
    if goals_text:
        worst = min(goals_text, key=lambda x: x[2])
        lines.append(
            f"- Lowest ours ÷ raw: {worst[2]:.2f}× at batch {worst[0]}, length {worst[1]}."
        )
    h.finish(SECTION, lines, machine, args)  # the issue sets no bound per shape
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
