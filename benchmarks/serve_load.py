"""Load test of `ernie-deploy serve`: throughput and latency at 1 / 8 / 64 clients vs in-process batches.

Starts the real server as users do (`python -m ernie_deploy serve NAME=PATH --port P`, on
127.0.0.1 only), waits for /health, then, for each concurrency level, sends a fixed number
of requests (one text each by default) from that many concurrent keep-alive connections and
measures requests/s, texts/s and p50 / p99 latency, plus what the server's /metrics say
about its batches (requests and rows merged per session.run, time in session.run). Two load
clients (see `_http_load`): a minimal asyncio HTTP/1.1 client (`raw`, cheap: it measures the
server) and httpx.AsyncClient (`httpx`, what Python callers use). Side by side, in the same
run and on the same texts: the Python API's own batch throughput
(`ernie_deploy.load(model, batch_size=32).predict(texts)`), the most the server could reach.
Every measurement is repeated (`--repeats`), interleaved, and reported as median (min–max).

Bounded: `--requests` per level and `--max-seconds` overall (runs past it are skipped and
said so). Writes the "HTTP server under load" section of benchmarks/RESULTS.md.

    python benchmarks/serve_load.py                    # bundled sentiment-zh on /v1/classify
    python benchmarks/serve_load.py --quick            # 120 requests per level
    python benchmarks/serve_load.py --model ner=ner-zh --route /v1/ner
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
from _http_load import CLIENTS, Run, Server, encode, load_run  # noqa: E402

SECTION = "serve_load"
TITLE = "## HTTP server under load"
ROUTES = ("/v1/classify", "/v1/ner", "/v1/embed", "/v1/embeddings", "/v1/rerank", "/models/{name}")
DEFAULT_ROUTE = {
    "seq_cls": "/v1/classify",
    "token_cls": "/v1/ner",
    "embedding": "/v1/embed",
    "rerank": "/v1/rerank",
}
QUERY = "这家酒店的服务怎么样"
NAN = float("nan")


def bodies(route: str, name: str, texts: list[str], per_request: int, truncate: bool) -> list[Any]:
    """The JSON body of each request: `per_request` consecutive texts each."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    if route == "/v1/rerank":
        return [
            {"query": QUERY, "documents": ch, "model": name, "truncate": truncate} for ch in chunks
        ]
    if route == "/v1/embeddings":
        return [{"input": ch, "model": name} for ch in chunks]
    if route == "/models/{name}":
        return [{"data": {"text": ch}} for ch in chunks]
    extra = {"truncate": True} if truncate and route != "/v1/ner" else {}
    return [{"texts": ch, "model": name, **extra} for ch in chunks]


def in_process(predictor: Any, route: str, texts: list[str], run: Run) -> Run:
    """The Python API on every text at once (batch_size 32): the server's ceiling."""
    with c.Clock() as clock:
        if route == "/v1/rerank":
            predictor.rerank(QUERY, texts)
        else:
            predictor.predict(texts)
    run.wall, run.client_cpu, run.texts = clock.wall, clock.cpu, len(texts)
    return run


def in_process_padding(predictor: Any, texts: list[str]) -> float:
    """Padded / real tokens of the in-process batches (NaN where the engine is not the usual)."""
    try:
        from ernie_deploy.tasks.batching import iter_batches

        engine = predictor.engine
        seqs = engine.encode(texts, truncate=True)
        real = sum(len(s.input_ids) for s in seqs)
        padded = sum(
            b.features["input_ids"].size
            for b in iter_batches(seqs, engine.batch_size, engine.tokenizer.pad_id)
        )
        return padded / real
    except Exception:  # internals changed, or a task whose rows are not one per text
        return NAN


# ---- report ----------------------------------------------------------------------------------


def _spread(runs: list[Run], fn: Any, digits: int, unit: str = "") -> str:
    return c.Spread.of([fn(r) for r in runs]).fmt(digits, unit)


def _ms(q: float) -> Any:
    return lambda r: c.percentile(r.latencies, q) * 1000


def _done(r: Run) -> int:
    return max(r.requests + r.errors, 1)


def _cores(cpu: float | None, wall: float) -> float:
    return NAN if cpu is None or wall <= 0 else cpu / wall


def report(args: argparse.Namespace, runs: list[Run], info: dict[str, Any]) -> str:
    inproc = {r.repeat: r for r in runs if r.kind == "inprocess"}
    ip = c.Spread.of([r.texts_per_s for r in inproc.values()])
    ip_cpu = c.Spread.of([_cores(r.client_cpu, 1) * 1000 / r.texts for r in inproc.values()])
    rows, cpu_rows = [], []
    for kind in args.clients:
        for level in args.levels:
            rs = [r for r in runs if r.kind == kind and r.level == level]
            if not rs:
                rows.append([kind, str(level), "skipped (time budget)"] + [""] * 7)
                continue
            cut = " (cut at deadline)" if any(r.cut for r in rs) else ""
            rows.append(
                [
                    kind,
                    f"{level}{cut}",
                    _spread(rs, lambda r: r.requests_per_s, 0),
                    _spread(rs, lambda r: r.texts_per_s, 0),
                    _spread(rs, _ms(50), 1),
                    _spread(rs, _ms(99), 1),
                    _spread(rs, lambda r: r.per("batch_requests_sum", "batch_requests_count"), 1),
                    _spread(rs, lambda r: r.per("batch_size_sum", "batch_size_count"), 1),
                    c.Spread.of(
                        [
                            r.texts_per_s / inproc[r.repeat].texts_per_s
                            for r in rs
                            if r.repeat in inproc
                        ]
                    ).fmt(2, "×"),
                    str(sum(r.errors for r in rs)),
                ]
            )
            cpu_rows.append(
                [
                    kind,
                    str(level),
                    _spread(rs, lambda r: _cores(r.server_cpu, r.wall), 2),
                    _spread(rs, lambda r: _cores(r.client_cpu, r.wall), 2),
                    _spread(rs, lambda r: _cores(r.server_cpu, 1) * 1000 / _done(r), 2),
                    _spread(rs, lambda r: _cores(r.client_cpu, 1) * 1000 / _done(r), 2),
                    _spread(
                        rs,
                        lambda r: r.metrics.get("batch_duration_seconds_sum", 0) * 1000 / _done(r),
                        2,
                    ),
                    _spread(
                        rs,
                        lambda r: 100 * r.metrics.get("batch_duration_seconds_sum", 0) / r.wall,
                        0,
                        "%",
                    ),
                    _spread(rs, lambda r: r.per("padded_tokens_total", "tokens_total"), 2),
                ]
            )
    lengths = [len(t) for t in info["texts"]]
    command = "python benchmarks/serve_load.py" + "".join(
        " " + shlex.quote(a) for a in info["argv"]
    )
    lines = [
        TITLE,
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}; load average at the end {info['load_end']}.",
        "",
        f"Server: `{info['server_command']}`, default limits unless that command says otherwise "
        "(max_batch_size 32, max_batch_tokens 16384, max_wait_ms 5, 32 worker threads), "
        f"{info['http_stack']}, access log on; ready {info['ready_s']:.1f} s after start. Model "
        f"`{args.model}` ({info['task']}), route `{args.route}`, {args.texts_per_request} "
        "text(s) per request.",
        f"Load: {args.requests} requests per level, one keep-alive connection per concurrent "
        "client, opened before timing; clients `raw` (minimal asyncio HTTP/1.1) and/or `httpx` "
        f"(httpx.AsyncClient); {args.repeats} repeats, every (client, level) and the in-process "
        "run interleaved, order rotated each repeat. Texts: "
        f"{len(lengths)} made-up Chinese review sentences ({min(lengths)}–{max(lengths)} "
        f"characters, mean {sum(lengths) / len(lengths):.0f}; `_common.mixed_chinese_texts`), "
        "the same texts at every level and in-process.",
        "",
        "In-process baseline, `ernie_deploy.load(model, batch_size=32).predict(texts)` on the same "
        f"{len(lengths)} texts: **{ip.fmt(0)} texts/s**, {ip_cpu.fmt(2)} ms of CPU per text, "
        f"padding {info['ip_padding']:.2f}.",
        "",
        c.table(
            [
                "client",
                "concurrent",
                "requests/s",
                "texts/s",
                "p50 ms",
                "p99 ms",
                "requests / batch",
                "rows / batch",
                "server / in-process",
                "errors",
            ],
            rows,
        ),
        "",
        "Where the time went (cores = CPU seconds / wall seconds; the server's CPU counts all its "
        "threads; session.run figures from /metrics; padding = padded / real tokens run):",
        "",
        c.table(
            [
                "client",
                "concurrent",
                "server cores",
                "client cores",
                "server CPU ms / req",
                "client CPU ms / req",
                "session.run ms / req",
                "session.run busy",
                "padding",
            ],
            cpu_rows,
        ),
        "",
    ]
    lines += [f"- {n}" for n in notes(args, runs, info, ip, ip_cpu)]
    return "\n".join(lines)


def notes(
    args: argparse.Namespace, runs: list[Run], info: dict[str, Any], ip: c.Spread, ip_cpu: c.Spread
) -> list[str]:
    out = []
    usable = c.usable_cores()[0]
    if info["load_start_1m"] > 0.5 * usable:
        out.append(
            f"The machine was busy: 1-minute load average {info['load_start_1m']:.2f} on "
            f"{usable} usable cores before this benchmark started, so server, load client and "
            "in-process runs shared the CPUs with other processes. Expect noise (see the ranges)."
        )
    out += args.note or []
    if info["plain_stack"]:
        out.append(
            "uvicorn ran on plain asyncio with the pure-Python h11 HTTP parser (uvloop and "
            "httptools are not installed; `pip install 'uvicorn[standard]'` adds them)."
        )
    if 1 in args.levels:
        out.append(
            "At 1 client every request is alone in its batch, and the batcher holds it for "
            "max_wait_ms (5 ms by default) waiting for company: that wait is in its latency."
        )
    top = max(args.levels)
    for kind in args.clients:
        rs = [r for r in runs if r.kind == kind and r.level == top]
        if rs:
            out.append(limit_note(kind, top, rs, ip, info["ip_padding"]))
    out.append(
        f"In-process the model costs {ip_cpu.median:.2f} ms of CPU per text (tokenize, run, "
        "decode); a request's server CPU above that is HTTP and Python overhead (h11 parsing, "
        "JSON, pydantic, the event loop, hand-offs to the worker and inference threads)."
    )
    out.append(
        "Client and server share this machine over loopback: the load client's CPU is taken "
        "from the server, so these figures are a lower bound for clients on other machines."
    )
    return out


def limit_note(kind: str, level: int, rs: list[Run], ip: c.Spread, ip_padding: float) -> str:
    """What limited throughput at `level` clients, read from the run's CPU and /metrics figures."""

    def med(fn: Any) -> float:
        return c.Spread.of([fn(r) for r in rs]).median

    busy = med(lambda r: r.metrics.get("batch_duration_seconds_sum", 0) / r.wall)
    run_ms = med(lambda r: r.metrics.get("batch_duration_seconds_sum", 0) * 1000 / _done(r))
    client_ms = med(lambda r: _cores(r.client_cpu, 1) * 1000 / _done(r))
    server_ms = med(lambda r: _cores(r.server_cpu, 1) * 1000 / _done(r))
    server_cores = med(lambda r: _cores(r.server_cpu, r.wall))
    padding = med(lambda r: r.per("padded_tokens_total", "tokens_total"))
    head = f"{kind} x{level}: "
    if busy >= 0.8:
        return head + (
            f"session.run was busy {busy:.0%} of the time, so the one inference thread was "
            f"the limit. It took {run_ms:.2f} ms per request against {1000 / ip.median:.2f} ms "
            f"of wall time per text for the whole in-process predict: padding {padding:.2f} "
            f"against {ip_padding:.2f} in-process (the server sorts only the rows that arrived "
            "together), and ONNX Runtime's threads share the cores with the server's own."
        )
    if client_ms >= 0.5 * server_ms:
        return head + (
            f"the load client used {client_ms:.2f} ms of CPU per request against the server's "
            f"{server_ms:.2f} ms, on the same cores: the client, not the server, was the limit "
            f"(session.run busy only {busy:.0%})."
        )
    return head + (
        f"session.run was busy only {busy:.0%} of the time while the server used "
        f"{server_cores:.2f} cores at {server_ms:.2f} ms of CPU per request: its Python side "
        "(event loop, h11, JSON, worker threads) or the cores it could get were the limit."
    )


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default="sentiment-zh=sentiment-zh",
        help="NAME=PATH; PATH may be a bundled model's name [sentiment-zh=sentiment-zh]",
    )
    p.add_argument("--route", choices=ROUTES, help="route to load (default: by the model's task)")
    p.add_argument("--levels", default="1,8,64", help="concurrent clients [1,8,64]")
    p.add_argument("--clients", default="raw,httpx", help="load clients: raw, httpx [raw,httpx]")
    p.add_argument("--requests", type=int, default=300, help="requests per level and repeat [300]")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts in each request [1]")
    p.add_argument("--repeats", type=int, default=3, help="repeats of every measurement [3]")
    p.add_argument("--max-seconds", type=float, default=300, help="time budget of the run [300]")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads, server and in-process")
    p.add_argument("--server-args", default="", help="more `serve` options: '--max-wait-ms 2'")
    p.add_argument("--quick", action="store_true", help="120 requests per level")
    p.add_argument("--note", action="append", help="a line for the section's notes")
    p.add_argument("--results", type=Path, default=c.RESULTS, help="the RESULTS.md to update")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.clients = [x.strip() for x in args.clients.split(",") if x.strip()]
    if args.quick:
        args.requests = 120
    if not args.levels or min(args.levels) < 1 or min(args.requests, args.repeats) < 1:
        p.error("--levels, --requests and --repeats must be at least 1")
    if args.texts_per_request < 1 or not set(args.clients) <= set(CLIENTS) or not args.clients:
        p.error(f"--texts-per-request must be at least 1; --clients from {', '.join(CLIENTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.max_seconds
    name, sep, path = args.model.partition("=")
    if not sep:
        name, path = Path(args.model.rstrip("/")).name, args.model
    stack = [f"uvicorn {c.version('uvicorn')}", f"httpx {c.version('httpx')}"]
    stack += [f"{m} {'yes' if c.has_module(m) else 'no'}" for m in ("uvloop", "httptools")]
    plain = not (c.has_module("uvloop") or c.has_module("httptools"))
    info: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "load_start_1m": os.getloadavg()[0],
        "machine": c.machine_line(stack),
        "plain_stack": plain,
        "http_stack": "uvicorn on asyncio + h11 (no uvloop, no httptools)"
        if plain
        else "uvicorn with " + ", ".join(m for m in ("uvloop", "httptools") if c.has_module(m)),
    }
    c.progress(f"machine: {info['machine']}")

    import ernie_deploy

    predictor = ernie_deploy.load(path, batch_size=32, threads=args.threads)
    info["task"] = predictor.task
    args.route = args.route or DEFAULT_ROUTE[predictor.task]
    truncate = hasattr(predictor, "truncate") and predictor.task != "token_cls"
    if truncate:  # the server's requests say truncate: true too
        setattr(predictor, "truncate", True)  # noqa: B010 (not every head has it)
    texts = c.mixed_chinese_texts(args.requests * args.texts_per_request, seed=0)
    info["texts"] = texts
    info["ip_padding"] = in_process_padding(predictor, texts)
    url_path = args.route.replace("{name}", name)
    payloads = [
        encode(b) for b in bodies(args.route, name, texts, args.texts_per_request, truncate)
    ]
    extra = shlex.split(args.server_args)
    extra += ["--threads", str(args.threads)] if args.threads else []
    server = Server(f"{name}={path}", extra)
    info["server_command"] = server.command.replace(f"--port {server.port}", "--port PORT")
    c.progress(f"started {server.command}")
    runs: list[Run] = []
    try:
        info["ready_s"] = server.wait_ready(timeout=min(180, args.max_seconds))
        c.progress(f"server ready in {info['ready_s']:.1f} s at {server.url}")
        # untimed warm-up of both paths (sessions, thread pools, allocator)
        in_process(predictor, args.route, texts, Run("inprocess", 0, -1))
        load_run(
            server,
            name,
            url_path,
            payloads[:32],
            args.texts_per_request,
            deadline,
            Run(args.clients[0], 8, -1),
        )
        names = ["inprocess"] + [f"{k}:{n}" for k in args.clients for n in args.levels]
        for repeat, what in c.interleaved(args.repeats, names):
            if time.perf_counter() > deadline:
                c.progress(f"time budget ({args.max_seconds:.0f} s) spent: skipping the rest")
                break
            head = f"repeat {repeat + 1}/{args.repeats}"
            if what == "inprocess":
                run = in_process(predictor, args.route, texts, Run("inprocess", 0, repeat))
                c.progress(f"{head} in-process: {run.texts_per_s:,.0f} texts/s")
            else:
                kind, level = what.split(":")
                run = Run(kind, int(level), repeat)
                run_deadline = min(deadline, time.perf_counter() + args.max_seconds / 4)
                load_run(
                    server, name, url_path, payloads, args.texts_per_request, run_deadline, run
                )
                c.progress(
                    f"{head} {kind:>5} x{level:>3}: {run.requests_per_s:,.0f} req/s, "
                    f"p50 {c.percentile(run.latencies, 50) * 1e3:.1f} ms, "
                    f"p99 {c.percentile(run.latencies, 99) * 1e3:.1f} ms, "
                    f"{run.per('batch_requests_sum', 'batch_requests_count'):.1f} requests/batch"
                    + (f", {run.errors} errors" if run.errors else "")
                    + (" (cut at deadline)" if run.cut else "")
                )
            runs.append(run)
    finally:
        status = server.stop()
        c.progress(f"server stopped (exit status {status}); its log: {server.log_path}")
    info["load_end"] = c.load_average()
    section = report(args, runs, info)
    c.emit(SECTION, section, info["machine"], args.results, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
