"""Long-text NER: time per 1,000 characters for one text of 1k, 10k and 100k characters.

Our token_cls predictor (ERNIE 3.0 medium-shaped, converted with `convert paddle`, the
loader's default max_seq_length 128) windows a long text into overlapping windows, runs them
in batches and stitches the logits, so the time per character should not grow with the
text's length. Each size is one text of consecutive MSRA test sentences, predicted alone
(`predict([text])`); the sizes run interleaved, the largest fewer times. Peak RSS: this
process's high-water mark after each size's first run (sizes first run in increasing order).
Writes the section "longtext".

    python benchmarks/cmp_longtext.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402
import _ours  # noqa: E402
import _rss  # noqa: E402

SECTION = "longtext"
TASK = "token_cls"
SIZES = (1_000, 10_000, 100_000)
BATCH = 32


def repeats_for(size: int, repeats: int) -> int:
    """The 100k text runs once (a minute or two at full size on 2 cores), 10k at most twice."""
    if size >= 100_000:
        return 1
    return min(repeats, 2) if size >= 10_000 else repeats


def _predictor(quick: bool) -> Any:
    return _ours.load(_models.ernie_onnx(TASK, _models.shape_for(quick)), TASK, None, BATCH)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=3, seconds=150)
    args = h.finish_args(p.parse_args(argv), repeats=3)
    machine = c.machine_line()
    c.progress(f"machine: {machine}")
    shape = _models.shape_for(args.quick)
    predictor = _predictor(args.quick)
    texts = {size: _data.long_text(size, seed=3) for size in SIZES}
    windows = {size: len(_ours.raw_batches(predictor, [t]).feeds) for size, t in texts.items()}
    tokens = {size: _ours.count_tokens(predictor, [t]) for size, t in texts.items()}
    h.start_clock(args)
    predictor.predict([texts[SIZES[0]]])  # warm-up
    walls: dict[int, list[float]] = {size: [] for size in SIZES}
    entities: dict[int, int] = {}
    peak: dict[int, float] = {}
    # the first round goes up in size, so the process's peak RSS after each size is that size's
    order = [*SIZES] + [size for _, size in c.interleaved(args.repeats - 1, list(SIZES))]
    done = {size: 0 for size in SIZES}
    for size in order:
        if done[size] >= repeats_for(size, args.repeats) or (done[size] and h.past_deadline(args)):
            continue
        time.sleep(h.GAP_S)
        with c.Clock() as clock:
            result = predictor.predict([texts[size]])
        done[size] += 1
        walls[size].append(clock.wall)
        entities[size] = len(result[0].entities)
        peak.setdefault(size, _rss.peak_rss_kb() / 1024)
        c.progress(f"{size:,} chars run {done[size]}: {clock.wall * 1e6 / size:.1f} ms / 1k chars")
    per_k = {size: c.Spread.of([w * 1e6 / size for w in walls[size]]) for size in SIZES}
    rows = []
    for size in SIZES:
        rows.append(
            [
                f"{size:,}",
                f"{tokens[size]:,}",
                str(windows[size]),
                c.Spread.of(walls[size]).fmt(2, " s"),
                per_k[size].fmt(1),
                f"{per_k[size].median / per_k[SIZES[0]].median:.2f}×",
                str(entities.get(size, "")),
                h.fmt_mb(peak.get(size, float("nan"))),
            ]
        )
    header = ["characters", "tokens run", "session.run calls", "time", "ms / 1,000 chars"]
    header += ["vs 1k", "entities", "process peak RSS MB"]
    engine = predictor.engine
    lines = h.section_head(
        "## Long-text NER: time per 1,000 characters", args, "cmp_longtext.py", machine
    )
    lines += [
        f"Model: ERNIE token_cls, {shape.describe()}, random init (entity counts are "
        f"meaningless), max_seq_length {engine.max_seq_length} (windows of "
        f"{predictor.window_size} tokens overlapping by {predictor.window_overlap}), "
        f"batches of {BATCH}. One text per size (consecutive MSRA test sentences), "
        f"`predict([text])`; 1k up to {args.repeats} runs, 10k up to 2, 100k once; sizes "
        "interleaved after a first round in increasing size. Tokens run: window tokens with "
        "special tokens, overlaps counted. Process peak RSS: VmHWM of this process after the "
        "size's first run (the model loaded, smaller sizes run before).",
        "",
        c.table(header, rows),
        "",
    ]
    ratio = per_k[SIZES[-1]].median / per_k[SIZES[0]].median
    goal = h.Goal(
        "Long-text NER time per 1,000 characters at 100k within 1.2 × of at 1k",
        f"{per_k[SIZES[-1]].median:.1f} vs {per_k[SIZES[0]].median:.1f} ms → {ratio:.2f}×",
        ratio <= 1.2,
        f"ERNIE, {shape.short}; one text per size, predicted alone",
    )
    h.finish(SECTION, lines, machine, args, [goal])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
