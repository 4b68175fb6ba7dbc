"""The bundled defaults, old vs new: ERNIE `ner-zh` / `sentiment-zh` (3 layers, hidden 192, fp32)
against the e5 heads `ner-zh-e5` / `sentiment-zh-e5` (12 / 11 layers, hidden 384, int8) that replaced
them as infer.py's defaults. Texts per second through `predict` on the 5,000 MSRA test
sentences, each pair interleaved in one run, best of the repeats. Writes the section "defaults".

    python benchmarks/cmp_defaults.py [--repeats N] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402

PAIRS = (("token_cls", "ner-zh", "ner-zh-e5"), ("seq_cls", "sentiment-zh", "sentiment-zh-e5"))
SECTION = "defaults"


def main(argv: list[str] | None = None) -> int:
    import ernie_deploy

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results", type=Path, default=c.RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    machine = c.machine_line()
    texts = _data.msra_sentences()[:5000]
    rows = ["| task | old (ERNIE, fp32) | new (e5 head, int8) | new ÷ old time per text |",
            "| --- | --- | --- | --- |"]  # fmt: skip
    for task, old, new in PAIRS:
        models = {n: ernie_deploy.load(n, device="cpu", truncate=True) for n in (old, new)}
        best = c.best_predict_seconds(models, texts, args.repeats)
        rate = {n: len(texts) / s for n, s in best.items()}
        rows.append(
            f"| {task} | `{old}` {rate[old]:.0f} texts/s | `{new}` {rate[new]:.0f} texts/s | "
            f"{best[new] / best[old]:.2f}× |"
        )
        c.progress(rows[-1])
    body = "\n".join(
        [
            "## The bundled defaults: old ERNIE vs new e5 heads",
            "",
            f"`python benchmarks/cmp_defaults.py`: {len(texts):,} MSRA test sentences through "
            f"`predict` (default batch and threads), best of {args.repeats} interleaved runs.",
            "",
            *rows,
        ]
    )
    c.emit(SECTION, body, machine, args.results, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
