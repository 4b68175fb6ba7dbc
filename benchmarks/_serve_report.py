"""The "HTTP server under load" section of serve_load.py: tables per workload and issue 13's goals."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import _common as c
import _harness as h
from _http_load import Run

TITLE = "## HTTP server under load"
NAN = float("nan")
WHO = {
    "ours": "ours",
    "base": "ours, baseline tree",
    "infinity": "Infinity",
    "sorted": "in-process, all texts sorted",
    "chunks64": "in-process, chunks of 64",
    "single": "in-process, one text per call",
}

Runs = list[tuple[Any, Run]]  # (serve_load.Cell, Run)


def _pick(runs: Runs, wkey: str, k: int, level: int, who: str) -> list[Run]:
    return [
        r
        for cell, r in runs
        if cell.workload.key == wkey
        and cell.per_request == k
        and cell.level == level
        and cell.who == who
    ]


def _ratio(a: list[Run], b: list[Run], fn: Callable[[Run], float]) -> c.Spread:
    """Per repeat a/b (the two were measured in the same repeat), median (range)."""
    by = {r.repeat: fn(r) for r in b}
    return c.Spread.of([fn(r) / by[r.repeat] for r in a if r.repeat in by and by[r.repeat]])


def _tps(r: Run) -> float:
    return r.texts_per_s


def _ms(q: float) -> Callable[[Run], float]:
    return lambda r: c.percentile(r.latencies, q) * 1000


def _cpu_ms_per_req(r: Run) -> float:
    return NAN if r.server_cpu is None else r.server_cpu * 1000 / max(r.requests + r.errors, 1)


def _cpu_ms_per_text(r: Run) -> float:
    return NAN if r.client_cpu is None else r.client_cpu * 1000 / max(r.texts, 1)


def _s(rs: list[Run], fn: Callable[[Run], float], digits: int, unit: str = "") -> str:
    return c.Spread.of([fn(r) for r in rs]).fmt(digits, unit)


def workload_table(w: Any, who: list[str], runs: Runs, levels: Sequence[int]) -> str:
    rows = []
    for k in w.per_request:
        for mode in ("sorted", "chunks64", "single"):
            rs = _pick(runs, w.key, k, 0, mode)
            if rs:
                p50 = _s(rs, _ms(50), 1) if mode == "single" else "—"
                rows.append(
                    [
                        str(k),
                        "—",
                        WHO[mode],
                        _s(rs, _tps, 2 if w.long else 0),
                        p50,
                        "—",
                        "—",
                        "—",
                        "—",
                        _s(rs, _cpu_ms_per_text, 2) + " / text",
                        "—",
                        "—",
                        "—",
                    ]
                )
        sorted_, chunks = _pick(runs, w.key, k, 0, "sorted"), _pick(runs, w.key, k, 0, "chunks64")
        for n in levels:
            for name in who:
                rs = _pick(runs, w.key, k, n, name)
                if not rs:
                    rows.append([str(k), str(n), WHO[name], "not run (time budget)"] + [""] * 9)
                    continue
                others = [
                    f"{_ratio(rs, _pick(runs, w.key, k, n, o), _tps).fmt(2, '×')} {WHO[o]}"
                    for o in who
                    if o != name and name == "ours" and _pick(runs, w.key, k, n, o)
                ]
                rows.append(
                    [
                        str(k),
                        str(n) + (" (cut)" if any(r.cut for r in rs) else ""),
                        WHO[name],
                        _s(rs, _tps, 2 if w.long else 0),
                        _s(rs, _ms(50), 1),
                        _s(rs, _ms(99), 1),
                        _ratio(rs, sorted_, _tps).fmt(2, "×"),
                        _ratio(rs, chunks, _tps).fmt(2, "×"),
                        "; ".join(others) or "—",
                        _s(rs, _cpu_ms_per_req, 2) + " / req",
                        _s(rs, lambda r: r.per("batch_size_sum", "batch_size_count"), 1)
                        if name != "infinity"
                        else "—",
                        _s(rs, lambda r: r.per("padded_tokens_total", "tokens_total"), 2)
                        if name != "infinity"
                        else "—",
                        str(sum(r.errors for r in rs)),
                    ]
                )
    header = [
        "texts / request",
        "clients",
        "who",
        "texts/s",
        "p50 ms",
        "p99 ms",
        "÷ in-process sorted",
        "÷ in-process chunks of 64",
        "ours ÷ peer",
        "server CPU ms",
        "rows / batch",
        "padding",
        "errors",
    ]
    return c.table(header, rows)


def _med(rs: list[Run], fn: Callable[[Run], float]) -> float:
    return c.Spread.of([fn(r) for r in rs]).median


def goals(runs: Runs, who: dict[str, list[str]]) -> list[h.Goal]:
    """Issue 13's goals measured in this run (what run_all's goals table lists too)."""
    out = []
    for wkey, label in (("sentiment", "sentiment-zh"), ("minilm", "MiniLM /v1/embeddings")):
        ours = _pick(runs, wkey, 1, 64, "ours")
        if ours:
            r = _ratio(ours, _pick(runs, wkey, 1, 0, "chunks64"), _tps)
            s = _ratio(ours, _pick(runs, wkey, 1, 0, "sorted"), _tps)
            out.append(
                h.Goal(
                    f"serve {label}, 64 clients × 1 text ≥ 0.9 × in-process chunks of 64",
                    r.fmt(2, "×"),
                    r.median >= 0.9,
                    f"÷ all texts sorted {s.fmt(2, '×')}",
                )
            )
        ours8 = _pick(runs, wkey, 8, 64, "ours")
        if ours8:
            s = _ratio(ours8, _pick(runs, wkey, 8, 0, "sorted"), _tps)
            out.append(
                h.Goal(
                    f"serve {label}, 64 clients × 8 texts ≥ 0.9 × in-process",
                    s.fmt(2, "×"),
                    s.median >= 0.9,
                )
            )
    ours = _pick(runs, "sentiment", 1, 64, "ours")
    chunks = _pick(runs, "sentiment", 1, 0, "chunks64")
    if ours and chunks:
        cpu, model = _med(ours, _cpu_ms_per_req), _med(chunks, _cpu_ms_per_text)
        out.append(
            h.Goal(
                "serve CPU per request beyond the model's ≤ 0.5 ms (sentiment-zh, "
                "1 text, 64 clients)",
                f"{cpu - model:.2f} ms",
                cpu - model <= 0.5,
                f"{cpu:.2f} ms per request − {model:.2f} ms per text in-process",
            )
        )
    if "infinity" in who.get("minilm", []):
        for k in (1, 8):
            for n, bound in ((64, 1.3), (8, 1.0), (1, 1.0)):
                ours = _pick(runs, "minilm", k, n, "ours")
                inf = _pick(runs, "minilm", k, n, "infinity")
                if ours and inf:
                    r = _ratio(ours, inf, _tps)
                    out.append(
                        h.Goal(
                            f"serve MiniLM ours ≥ {bound} × Infinity, {n} clients × {k} text(s)",
                            r.fmt(2, "×"),
                            r.median >= bound,
                        )
                    )
    for wkey in ("sentiment", "ner", "minilm"):
        one, single = _pick(runs, wkey, 1, 1, "ours"), _pick(runs, wkey, 1, 0, "single")
        if one and single:
            p50, floor = _med(one, _ms(50)), _med(single, _ms(50))
            out.append(
                h.Goal(
                    f"serve {wkey}, 1 client: p50 ≤ one in-process call + 1.5 ms",
                    f"{p50:.1f} ms",
                    p50 <= floor + 1.5,
                    f"one in-process call {floor:.1f} ms",
                )
            )
    for wkey in ("sentiment", "ner", "minilm"):
        for k in (1, 8):
            rs = _pick(runs, wkey, k, 64, "ours")
            if rs:
                p50, p99 = _med(rs, _ms(50)), _med(rs, _ms(99))
                errors = sum(r.errors for r in rs)
                out.append(
                    h.Goal(
                        f"serve {wkey}, 64 clients × {k}: p99 ≤ 2 × p50, 0 errors",
                        f"{p99 / p50:.2f} × p50, {errors} errors",
                        p99 <= 2 * p50 and errors == 0,
                        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                    )
                )
    return out


def bullet(g: h.Goal) -> str:
    verdict = "**met**" if g.passed else "**missed**"
    return f"{g.goal}: {g.measured} ({verdict}){'; ' + g.note if g.note else ''}."


def section(
    args: argparse.Namespace,
    chosen: list[Any],
    who: dict[str, list[str]],
    runs: Runs,
    info: dict[str, Any],
) -> str:
    command = "python benchmarks/serve_load.py" + "".join(
        " " + shlex.quote(a) for a in info["argv"]
    )
    lines = [
        TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; load average before {info['load_start']}, at the end "
        f"{info['load_end']}.",
        "",
    ]
    for (kind, model), cmd in info.get("commands", {}).items():
        ready = info["ready"][(kind, model)]
        lines.append(f"- {WHO[kind]} ({model}): `{cmd}`, ready {ready:.1f} s after start.")
    if "peer_versions" in info:
        lines.append(f"- Infinity's venv: {info['peer_versions']}.")
    for missing in info.get("peer_missing", []):
        lines.append(f"- Not run: {missing}")
    lines += [
        "",
        "Load: one keep-alive connection per client (a minimal asyncio HTTP/1.1 client, "
        "~0.1-0.2 ms CPU per request), opened before timing; every server gets the same "
        f"pre-encoded bodies. {args.repeats} repeats, every cell (workload × texts per request × "
        "clients × server, and the in-process runs) interleaved, order rotated each repeat; "
        "median (min–max). Ratios are taken within a repeat. In-process: `ernie_deploy.load("
        "model, batch_size=32, spinning=False)` (the server's session options) in the load "
        "client's process while the servers idle. Server CPU: all the server "
        "process's threads, per request; in-process CPU: per text. rows / batch and padding "
        "(padded ÷ real tokens) from our /metrics.",
        "",
    ]
    for w in chosen:
        t = info["texts"][(w.key, w.per_request[0])]
        lengths = [len(x) for x in t]
        desc = (
            f"{len(t)} MSRA texts of {min(lengths):,}–{max(lengths):,} characters"
            if w.long
            else f"{len(t)} Chinese review-like texts per 1-text run ({min(lengths)}–"
            f"{max(lengths)} characters), twice as many for 8 texts per request"
        )
        lines += [
            f"### {w.key}: `{w.name}` on `{w.route}`",
            "",
            desc + ".",
            "",
            workload_table(w, who[w.key], runs, args.levels or w.levels),
            "",
        ]
    lines += ["### Issue 13's goals, measured in this run", ""]
    lines += [f"- {bullet(g)}" for g in goals(runs, who)]
    if info["load_start_1m"] > 0.5 * c.usable_cores()[0]:
        lines.append(
            f"- The machine was busy (1-minute load average {info['load_start_1m']:.2f} on "
            f"{c.usable_cores()[0]} usable cores before the run): servers, client and in-process "
            "runs shared the CPUs with other processes; read the ranges."
        )
    lines += [f"- {n}" for n in args.note or []]
    return "\n".join(lines)
