"""Where a request's CPU goes in `ernie-deploy serve`: per thread, under load, beside the model's own.

Starts our server on one model (and, with `--baseline-src`, the same server from another
source tree), sends the same requests from `--clients` keep-alive connections several times,
alternating the servers, and reads every thread's CPU time from /proc/PID/task/*/schedstat before
and after each run. Threads are named with `py-spy dump --json` (`--py-spy`, installed in a
scratch venv: `pip install py-spy`): the event loop (MainThread), the model's worker threads,
its inference thread and asyncio's default executor are Python threads; the others are
native (ONNX Runtime's intra-op pool, tokenizers' Rayon pool). Without py-spy the threads are
grouped as "main" and "others". session.run wall time and batch shapes come from /metrics.
The in-process CPU per text (the same texts, `predict` in chunks of 64, spinning off) is the
model's own cost: what the server spends beyond it is its overhead.

    python benchmarks/serve_budget.py --py-spy /tmp/spy/bin/py-spy --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
from _http_load import Run, Server, encode, load_run  # noqa: E402

SECTION = "serve_budget"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of every thread of `pid`, by thread id (schedstat: nanoseconds, where
    /proc/.../stat counts 10 ms ticks, which a worker thread's share of a run rounds to 0)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


def thread_names(pid: int, py_spy: str | None) -> dict[int, str]:
    """Python thread names by OS thread id (py-spy), or {} without py-spy."""
    if not py_spy:
        return {pid: "MainThread"}
    res = subprocess.run(
        [py_spy, "dump", "--json", "--pid", str(pid)], capture_output=True, text=True, timeout=60
    )
    names = {}
    for thread in json.loads(res.stdout or "[]"):
        if thread.get("os_thread_id"):
            names[int(thread["os_thread_id"])] = str(thread.get("thread_name") or "python")
    return names


GROUPS = (
    "event loop (MainThread: HTTP parsing, routing, pydantic, JSON, metrics)",
    "worker threads (tokenize, post-process, thread hand-offs)",
    "inference thread (batching, padding, session.run incl. its own ORT share)",
    "native threads (ORT intra-op pool, tokenizers' Rayon pool)",
    "other Python threads (asyncio executor: JSON in the baseline)",
)


def group(name: str | None) -> str:
    if name is None:
        return GROUPS[3]
    if name == "MainThread":
        return GROUPS[0]
    if name.startswith("ernie-deploy-infer"):
        return GROUPS[2]
    if name.startswith("ernie-deploy-"):
        return GROUPS[1]
    return GROUPS[4]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", default="sentiment-zh=sentiment-zh")
    p.add_argument("--route", default="/v1/classify")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--py-spy", help="the py-spy binary, to name the threads")
    p.add_argument("--baseline-src", type=Path, help="also measure ours from this src/")
    p.add_argument("--results", type=Path, default=c.RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    import ernie_deploy

    name, _, path = args.model.partition("=")
    load_before = c.load_average()
    texts = _data.mixed_chinese_texts(args.requests, seed=3)
    extra = {} if args.route in ("/v1/ner", "/v1/embeddings") else {"truncate": True}
    key = "input" if args.route == "/v1/embeddings" else "texts"
    bodies = [encode({key: [t], "model": name, **extra}) for t in texts]
    servers = {"ours": Server.ours(args.model, [])}
    if args.baseline_src:
        servers["baseline"] = Server.ours(args.model, [], args.baseline_src)
    predictor = ernie_deploy.load(path, batch_size=32, spinning=False)
    if hasattr(predictor, "truncate") and args.route != "/v1/ner":
        setattr(predictor, "truncate", True)  # noqa: B010
    call = predictor.vectors if args.route == "/v1/embeddings" else predictor.predict
    cpu_per_text = []
    totals: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in servers}
    names: dict[str, dict[int, str]] = {k: {} for k in servers}
    try:
        for server in servers.values():
            server.wait_ready(240)
            load_run(server, name, args.route, bodies[:64], 1, 1e18, Run("raw", 8, -1))
        for repeat, who in c.interleaved(args.repeats, list(servers) + ["inprocess"]):
            if who == "inprocess":
                with c.Clock() as clock:
                    for i in range(0, len(texts), 64):
                        call(texts[i : i + 64])
                cpu_per_text.append((clock.cpu or 0) * 1000 / len(texts))
                continue
            server = servers[who]
            before = thread_cpu(server.proc.pid)
            run = load_run(
                server, name, args.route, bodies, 1, 1e18, Run("raw", args.clients, repeat)
            )
            after = thread_cpu(server.proc.pid)
            names[who].update(thread_names(server.proc.pid, args.py_spy))  # workers come and go
            per = {g: 0.0 for g in GROUPS}
            for tid, cpu in after.items():
                per[group(names[who].get(tid))] += (
                    (cpu - before.get(tid, 0.0)) * 1000 / run.requests
                )
            per["session.run wall (from /metrics), not CPU"] = (
                run.metrics.get("batch_duration_seconds_sum", 0) * 1000 / run.requests
            )
            per["rows per batch (from /metrics)"] = run.per("batch_size_sum", "batch_size_count")
            per["requests/s"] = run.requests_per_s
            for k, v in per.items():
                totals[who][k].append(v)
            c.progress(f"repeat {repeat + 1} {who}: {run.requests_per_s:.0f} req/s")
    finally:
        for server in servers.values():
            server.stop()
    model_ms = c.Spread.of(cpu_per_text)
    keys = list(GROUPS) + [k for k in totals[next(iter(servers))] if k not in GROUPS]
    rows = []
    for k in keys:
        rows.append([k] + [c.Spread.of(totals[w][k]).fmt(2) for w in servers])
    sums = {w: [sum(v) for v in zip(*(totals[w][k] for k in GROUPS))] for w in servers}
    rows.append(
        ["**server CPU per request, all threads**"] + [c.Spread.of(sums[w]).fmt(2) for w in servers]
    )
    rows.append(
        ["model's own CPU per text, in-process chunks of 64"] + [model_ms.fmt(2)] * len(servers)
    )
    rows.append(
        ["**beyond the model**"]
        + [c.Spread.of([s - model_ms.median for s in sums[w]]).fmt(2) for w in servers]
    )
    lines = [
        "## Where a request's CPU goes in the server",
        "",
        f"Command: `python benchmarks/serve_budget.py {' '.join(argv or sys.argv[1:])}`",
        "",
        f"Machine: {c.machine_line()}; load average before {load_before}, after "
        f"{c.load_average()}.",
        "",
        f"`{args.model}` on `{args.route}`, {args.requests} requests of 1 text from "
        f"{args.clients} keep-alive clients, {args.repeats} repeats alternating the servers "
        "and the in-process run. Milliseconds of CPU per request by thread group (from "
        "/proc/PID/task/*/schedstat; threads named by py-spy), median (min–max).",
        "",
        c.table(["per request", *servers], rows),
    ]
    c.emit(SECTION, "\n".join(lines), c.machine_line(), args.results, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
