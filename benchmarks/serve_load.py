"""Load test of `ernie-deploy serve` against Infinity and the in-process ceilings, at 1 / 8 / 64 clients.

Starts the real servers as users do, on 127.0.0.1 only: ours (`python -m ernie_deploy serve
NAME=PATH --port P`) and, for all-MiniLM-L6-v2 on OpenAI's /v1/embeddings, Infinity 0.0.78
(its optimum / ONNX Runtime engine, in its own venv, on the same model.onnx; see
`_serve_peers`). Each workload sends the same pre-encoded JSON bodies (1 or 8 texts each) from
1, 8 and 64 concurrent keep-alive connections of one cheap asyncio HTTP/1.1 client (`raw`, see
`_http_load`) and measures texts/s, p50 / p99 latency, the server's CPU and, for ours, what
/metrics say about its batches. Beside them, on the same texts in the same process: the Python
API's ceilings, every text in one `predict` (sorted by length into batches of 32) and
consecutive chunks of 64 texts (what 64 requests in flight can be batched as).

Workloads: `minilm` (/v1/embeddings, ours vs Infinity), `sentiment` (sentiment-zh,
/v1/classify), `ner` (ner-zh, /v1/ner) and `ner-long` (ner-zh on 1k-20k character texts);
Chinese texts from `_data.mixed_chinese_texts` (MSRA sentences for the long ones).
`--baseline-src DIR` also runs our server from another source tree (A/B of two versions).
Every measurement is repeated, all of them interleaved, order rotated each repeat; reported as
median (min-max). Bounded by `--max-seconds`. Writes the "HTTP server under load" section.

    python benchmarks/serve_load.py                       # every workload
    python benchmarks/serve_load.py --quick --workloads minilm
    python benchmarks/serve_load.py --baseline-src /tmp/old/src --workloads sentiment
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _serve_peers as peers  # noqa: E402
import _serve_report as report  # noqa: E402
from _http_load import Run, Server, encode, load_run  # noqa: E402

SECTION = "serve_load"
LEVELS = (1, 8, 64)
LONG_CHARS = (1_000, 2_000, 3_000, 5_000, 8_000, 12_000, 16_000, 20_000)


@dataclass(frozen=True)
class Workload:
    """One model and route under load: texts per request, client levels, peers."""

    key: str
    name: str  # the served model name
    path: str  # ours: a directory or a bundled name
    route: str
    per_request: tuple[int, ...] = (1, 8)
    levels: tuple[int, ...] = LEVELS
    peers: tuple[str, ...] = ()
    long: bool = False


def workloads(quick: bool) -> dict[str, Workload]:
    import _models

    minilm = str(_models.minilm_onnx())
    return {
        "minilm": Workload("minilm", "minilm", minilm, "/v1/embeddings", peers=("infinity",)),
        "sentiment": Workload("sentiment", "sentiment-zh", "sentiment-zh", "/v1/classify"),
        "ner": Workload("ner", "ner-zh", "ner-zh", "/v1/ner"),
        "ner-long": Workload("ner-long", "ner-zh", "ner-zh", "/v1/ner", (1,), (1, 8), long=True),
    }


def texts_for(w: Workload, per_request: int, requests: int, quick: bool) -> list[str]:
    if w.long:
        sizes = LONG_CHARS[::2] if quick else LONG_CHARS
        return [_data.long_text(n, seed=i) for i, n in enumerate(sizes)]
    count = requests if per_request == 1 else 2 * requests  # 8 per request: 2 per 64 clients
    return _data.mixed_chinese_texts(count, seed=per_request)


def bodies(w: Workload, texts: list[str], per_request: int) -> list[bytes]:
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    if w.route == "/v1/embeddings":
        return [encode({"input": ch, "model": w.name}) for ch in chunks]
    extra = {} if w.route == "/v1/ner" else {"truncate": True}
    return [encode({"texts": ch, "model": w.name, **extra}) for ch in chunks]


def in_process(predictor: Any, w: Workload, texts: list[str], mode: str, run: Run) -> Run:
    """The Python API on the same texts: all at once (`sorted`), 64 at a time (`chunks64`), or
    one call per text (`single`: the latency floor of a lone request; the first 64 texts)."""
    call = predictor.vectors if w.route == "/v1/embeddings" else predictor.predict
    if mode == "single":
        texts = texts[:64]
    step = {"sorted": len(texts), "chunks64": 64, "single": 1}[mode]
    with c.Clock() as clock:
        for i in range(0, len(texts), step):
            t0 = time.perf_counter()
            call(texts[i : i + step])
            run.latencies.append(time.perf_counter() - t0)
    run.wall, run.client_cpu, run.texts = clock.wall, clock.cpu, len(texts)
    return run


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workloads", default="minilm,sentiment,ner,ner-long", help="which to run")
    p.add_argument("--levels", help="concurrent clients for every workload [1,8,64]")
    p.add_argument("--requests", type=int, default=256, help="requests per 1-text run [256]")
    p.add_argument("--repeats", type=int, default=3, help="repeats of every measurement [3]")
    p.add_argument("--max-seconds", type=float, default=600, help="time budget [600]")
    p.add_argument("--server-args", default="", help="more `serve` options for ours")
    p.add_argument("--baseline-src", type=Path, help="also run ours from this src/ (A/B)")
    p.add_argument("--baseline-args", default="", help="more `serve` options for the baseline")
    p.add_argument("--infinity-venv", type=Path, default=peers.INFINITY_VENV)
    p.add_argument("--no-peers", action="store_true", help="ours only")
    p.add_argument("--quick", action="store_true", help="96 requests per run, fewer long texts")
    p.add_argument("--note", action="append", help="a line for the section's notes")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="the RESULTS.md to update")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    args = p.parse_args(argv)
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    if args.levels:
        args.levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    if args.quick:
        args.requests = min(args.requests, 96)
    if min(args.requests, args.repeats) < 1:
        p.error("--requests and --repeats must be at least 1")
    return args


@dataclass
class Cell:
    """One timed measurement to make each repeat."""

    workload: Workload
    per_request: int
    level: int  # 0: in-process
    who: str  # "ours", "base", "infinity", or the in-process mode ("sorted", "chunks64")

    @property
    def key(self) -> str:
        return f"{self.workload.key}|{self.per_request}|{self.level}|{self.who}"


def plan(
    args: argparse.Namespace, chosen: list[Workload], contenders: dict[str, list[str]]
) -> list[Cell]:
    cells = []
    for w in chosen:
        for k in w.per_request:
            modes = ("sorted", "chunks64") + (("single",) if k == 1 and not w.long else ())
            cells += [Cell(w, k, 0, mode) for mode in modes]
            for n in args.levels or w.levels:
                cells += [Cell(w, k, n, who) for who in contenders[w.key]]
    return cells


def start_servers(
    args: argparse.Namespace, chosen: list[Workload], info: dict[str, Any]
) -> tuple[dict[tuple[str, str], Server], dict[str, list[str]]]:
    """Every server the workloads need, started at once; (who, model) -> server."""
    servers: dict[tuple[str, str], Server] = {}
    contenders: dict[str, list[str]] = {}
    for w in chosen:
        who = ["ours"] + (["base"] if args.baseline_src else [])
        for kind in who:
            if (kind, w.name) not in servers:
                src = args.baseline_src if kind == "base" else None
                extra = (args.baseline_args if kind == "base" else args.server_args).split()
                servers[(kind, w.name)] = Server.ours(f"{w.name}={w.path}", extra, src)
        for peer in () if args.no_peers else w.peers:
            try:
                servers[(peer, w.name)] = peers.infinity_server(
                    Path(w.path), w.name, args.infinity_venv
                )
                info["peer_versions"] = peers.infinity_versions(args.infinity_venv)
                who.append(peer)
            except peers.PeerUnavailable as exc:
                c.progress(f"not running {peer}: {exc}")
                info.setdefault("peer_missing", []).append(f"{peer}: {exc}")
        contenders[w.key] = who
    for (kind, model), server in list(servers.items()):
        try:
            info.setdefault("ready", {})[(kind, model)] = server.wait_ready(timeout=240)
            info.setdefault("commands", {})[(kind, model)] = server.command
        except RuntimeError as exc:
            if kind == "ours":
                raise
            info.setdefault("peer_missing", []).append(f"{kind} {model} did not start: {exc}")
            server.stop()
            del servers[(kind, model)]
            for w in chosen:
                if w.name == model and kind in contenders[w.key]:
                    contenders[w.key].remove(kind)
    return servers, contenders


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.max_seconds
    import ernie_deploy

    table = workloads(args.quick)
    chosen = [table[k] for k in args.workloads]
    stack = [f"uvicorn {c.version('uvicorn')}", f"orjson {c.version('orjson')}"]
    stack += [f"{m} {'yes' if c.has_module(m) else 'no'}" for m in ("uvloop", "httptools")]
    info: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "load_start": c.load_average(),
        "load_start_1m": os.getloadavg()[0],
        "machine": c.machine_line(stack),
    }
    c.progress(f"machine: {info['machine']}")
    predictors = {}
    for w in chosen:
        if w.name not in predictors:
            # the server's session options (spinning off): the strongest in-process ceiling
            # on a shared machine (RESULTS.md), and like for like
            predictors[w.name] = ernie_deploy.load(w.path, batch_size=32, spinning=False)
            if hasattr(predictors[w.name], "truncate") and w.route != "/v1/ner":
                setattr(predictors[w.name], "truncate", True)  # noqa: B010 (as the requests say)
    texts = {
        (w.key, k): texts_for(w, k, args.requests, args.quick)
        for w in chosen
        for k in w.per_request
    }
    payloads = {key: bodies(table[key[0]], t, key[1]) for key, t in texts.items()}
    info["texts"] = texts
    runs: list[tuple[Cell, Run]] = []
    servers, contenders = start_servers(args, chosen, info)
    try:
        c.progress("servers ready: " + ", ".join(f"{k}:{m}" for k, m in servers))
        cells = plan(args, chosen, contenders)
        warmed: set[tuple[str, str, int]] = set()
        for cell in cells:  # untimed warm-up of every path (sessions, pools, allocators)
            w, k = cell.workload, cell.per_request
            if cell.level == 0:
                in_process(predictors[w.name], w, texts[(w.key, k)][:16], cell.who, Run("w", 0, -1))
            elif (cell.who, w.key, k) not in warmed:  # once per server and body shape
                warmed.add((cell.who, w.key, k))
                server = servers[(cell.who, w.name)]
                body = payloads[(w.key, k)][:8]
                load_run(server, w.name, w.route, body, k, deadline, Run("raw", 8, -1))
        by_key = {cell.key: cell for cell in cells}
        for repeat, key in c.interleaved(args.repeats, list(by_key)):
            if time.perf_counter() > deadline:
                c.progress(f"time budget ({args.max_seconds:.0f} s) spent: skipping the rest")
                break
            cell, w = by_key[key], by_key[key].workload
            run = Run("inprocess" if cell.level == 0 else "raw", cell.level, repeat)
            if cell.level == 0:
                in_process(predictors[w.name], w, texts[(w.key, cell.per_request)], cell.who, run)
            else:
                run_deadline = min(deadline, time.perf_counter() + args.max_seconds / 6)
                load_run(
                    servers[(cell.who, w.name)],
                    w.name,
                    w.route,
                    payloads[(w.key, cell.per_request)],
                    cell.per_request,
                    run_deadline,
                    run,
                )
            c.progress(
                f"repeat {repeat + 1}/{args.repeats} {key}: {run.texts_per_s:,.0f} texts/s"
                + (f", p50 {c.percentile(run.latencies, 50) * 1e3:.1f} ms" if cell.level else "")
                + (f", {run.errors} errors" if run.errors else "")
                + (" (cut at deadline)" if run.cut else "")
            )
            runs.append((cell, run))
    finally:
        for (kind, model), server in servers.items():
            status = server.stop()
            c.progress(f"{kind} {model} stopped (exit status {status}); its log: {server.log_path}")
    info["load_end"] = c.load_average()
    section = report.section(args, chosen, contenders, runs, info)
    h.record_goals(SECTION, report.goals(runs, contenders), args.quick)
    c.emit(SECTION, section, info["machine"], args.results, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
