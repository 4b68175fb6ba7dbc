"""ERNIE on one ONNX file: the raw-session limit, ours, the guide's way, Paddle Inference.

Per model, on the mixed-length corpus, interleaved in one process:

- raw session.run: our predictor's own session over our tokenized, length-sorted batches
  built beforehand (the limit of any wrapper of this session);
- ours: `ernie_deploy.load(dir).predict(texts)` end to end (tokenize, batch, run, decode);
- the guide's way (`_guide.py`): PaddleNLP tokenizer, chunks of 32 in input order padded to
  their longest, argmax decode, on the same ONNX file;
- Paddle Inference (CPU) on the source Paddle model (`paddle.jit.save` of the same weights),
  over the same batches as raw session.run, with oneDNN (without it: `--contenders`).

Models: the ERNIE 3.0 medium-shaped token_cls and seq_cls models at max_seq_length 512, so
no contender truncates or windows any corpus text (they all run the same real tokens; only
padding differs); and the bundled default models at their own max_seq_length (128), where
seq_cls contenders all truncate alike but for token_cls ours windows long texts and the guide
cuts them (ours does more work there). Paddle Inference runs on the medium token_cls model
only (the medium seq_cls encoder is the same; bundled models ship no Paddle files).
Writes the section "runtime".

    python benchmarks/cmp_runtime.py [--quick] [--subjects token_cls,seq_cls,bundled]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _data  # noqa: E402
import _harness as h  # noqa: E402
import _models  # noqa: E402
import _ours  # noqa: E402
import _rss  # noqa: E402
from _guide import GuidePredictor  # noqa: E402

SECTION = "runtime"
TASKS = ("token_cls", "seq_cls")
MAX_LEN = 512
BATCH = 32
RAW, OURS, GUIDE = "raw session.run", "ours", "guide's way"
PADDLE, PADDLE_DNN = "Paddle Inference", "Paddle Inference + oneDNN"
# Paddle Inference without oneDNN ran ~2.7x slower than with it on this model in a trial:
# left out by default to keep `make bench` within its time; add it with --contenders.
DEFAULT_CONTENDERS = (RAW, OURS, GUIDE, PADDLE_DNN)


@dataclass(frozen=True)
class Subject:
    """One model compared: its table key, directory, length limit, Paddle files (if any)."""

    key: str
    title: str
    task: str
    onnx_dir: Path
    max_len: int | None  # None: the directory's own
    static_dir: Path | None = None


@dataclass(frozen=True)
class Setup:
    quick: bool
    shape: _models.Shape
    corpus: _data.Corpus

    def subjects(self) -> list[Subject]:
        out = [
            Subject(
                task,
                f"{task}: ERNIE, {self.shape.describe()}, random init",
                task,
                _models.ernie_onnx(task, self.shape),
                MAX_LEN,
                _models.ernie_static(task, self.shape),
            )
            for task in TASKS
        ]
        for task in TASKS:
            found = _models.bundled(task)
            if found is not None:
                name, path = found
                out.append(Subject(name, f"bundled {name} ({task}, trained)", task, path, None))
        return out

    def subject(self, key: str) -> Subject:
        return next(x for x in self.subjects() if x.key == key)


# 256 texts: eight batches of 32, so length sorting has as much to work with as in a file of
# a few hundred lines (64 texts, two batches, measured ours at 1.69x the guide's way on the
# medium shape, padding 2.50 against its 4.16); a larger corpus would not fit the budget.
CORPUS_TEXTS = 256


def setup(quick: bool) -> Setup:
    corpus = _data.mixed_corpus(
        48 if quick else CORPUS_TEXTS, seed=0, long_share=0.125, max_chars=300
    )
    return Setup(quick, _models.shape_for(quick), corpus)


def paddle_inference(static_dir: Path, threads: int, onednn: bool) -> Callable[[list], None]:
    """A Paddle Inference predictor on the jit.save files; runs a list of feature batches."""
    import paddle.inference as pi

    program, params = _models.static_program(static_dir)
    config = pi.Config(str(program), str(params))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    predictor = pi.create_predictor(config)
    names = predictor.get_input_names()
    out_name = predictor.get_output_names()[0]

    def run(batches: list) -> None:
        for features in batches:
            for name in names:
                handle = predictor.get_input_handle(name)
                handle.reshape(features[name].shape)
                handle.copy_from_cpu(features[name])
            predictor.run()
            predictor.get_output_handle(out_name).copy_to_cpu()

    return run


def factories(s: Setup, key: str) -> dict[str, Callable[[], h.Contender]]:
    texts = s.corpus.texts
    x = s.subject(key)
    threads = _ours.threads()

    def load() -> Any:
        return _ours.load(x.onnx_dir, x.task, x.max_len, BATCH)

    def ours_batches() -> _ours.RawBatches:
        return _ours.raw_batches(load(), texts)

    def ours() -> h.Contender:
        p = load()
        rb = _ours.raw_batches(p, texts)
        how = "ernie_deploy.load(dir).predict(texts)"
        return h.Contender(OURS, p.predict, how, rb.padded_tokens / rb.real_tokens)

    def raw() -> h.Contender:
        rb = ours_batches()
        how = "our session, our batches made beforehand"
        return h.Contender(RAW, rb.run, how, rb.padded_tokens / rb.real_tokens)

    def guide() -> h.Contender:
        p = load()
        length = p.engine.max_seq_length
        labels = p.labels
        g = GuidePredictor(
            x.onnx_dir / "model.onnx", x.onnx_dir, x.task, labels, length, BATCH, threads
        )
        how = "paddlenlp tokenizer, 32 per batch in input order, argmax"
        padding = g.tokens_run(texts) / ours_batches().real_tokens
        return h.Contender(GUIDE, g.predict, how, padding)

    def paddle(onednn: bool) -> Callable[[], h.Contender]:
        def make() -> h.Contender:
            if x.static_dir is None:
                raise FileNotFoundError(f"{x.key} has no Paddle model")
            rb = ours_batches()
            batches = _ours.feature_batches(load(), texts)
            run = paddle_inference(x.static_dir, threads, onednn)
            how = f"same batches as raw, {threads} math threads, oneDNN {'on' if onednn else 'off'}"
            name = PADDLE_DNN if onednn else PADDLE
            return h.Contender(
                name, lambda _t: run(batches), how, rb.padded_tokens / rb.real_tokens
            )

        return make

    return {RAW: raw, OURS: ours, GUIDE: guide, PADDLE: paddle(False), PADDLE_DNN: paddle(True)}


def probe(table: str, name: str, quick: bool) -> tuple[list[str], Callable[[], h.Contender]]:
    s = setup(quick)
    return h.probe_texts(s.corpus.texts), factories(s, table)[name]


def measure_task(s: Setup, x: Subject, args: argparse.Namespace) -> h.TaskRun:
    texts = s.corpus.texts
    wanted = factories(s, x.key)
    if x.key not in args.paddle_subjects or x.static_dir is None:
        wanted = {k: v for k, v in wanted.items() if k not in (PADDLE, PADDLE_DNN)}
    contenders, missing = h.make_all(wanted, x.key, args.contenders)
    predictor = _ours.load(x.onnx_dir, x.task, x.max_len, BATCH)
    tokens = _ours.count_tokens(predictor, texts)
    warm = h.warmup_texts(texts)
    m = h.measure(contenders, texts, tokens, args.repeats, warm, x.key, args.deadline)
    info = {"max_seq_length": predictor.engine.max_seq_length}
    return h.TaskRun(x.key, m, {k.name: k.note for k in contenders}, missing, info)


def report_task(
    s: Setup, x: Subject, run: h.TaskRun, rss: dict[str, float] | None, args: argparse.Namespace
) -> tuple[list[str], list[h.Goal]]:
    task, m = x.key, run.m
    length = run.info["max_seq_length"]
    lines = [f"### {x.title}", "", f"max_seq_length {length}.", ""]
    lines += [h_table(m, rss, run.notes), ""]
    lines += [f"- {name}: not measured, it failed to load here: {why}" for name, why in run.missing]
    if (cut := m.cut_note(args.repeats)) is not None:
        lines.append(f"- {cut}")
    pad = m.padding.get(GUIDE)
    pad_note = "" if pad is None else f"the guide's chunks run {pad:.2f} tokens per real token"
    where = (x.title if x.static_dir is None else f"ERNIE, {s.shape.short}") + ", mixed corpus"
    if x.task == "token_cls" and not x.max_len:
        pad_note += (
            f" (the guide cuts texts past {length - 2} tokens, ours windows them: ours does more)"
        )
    goals = []
    if RAW in m.runs:
        r = m.speedup(OURS, RAW)
        extra = m.cpu_ms_per_text(OURS).median - m.cpu_ms_per_text(RAW).median
        lines.append(
            f"- ours used {extra:+.2f} ms of CPU per text beyond raw session.run on the same "
            "batches (tokenizing, batching, decoding into results)."
        )
        goals.append(
            h.Goal(
                f"{task}: ours end to end ≥ 0.95 × raw session.run on the same batches",
                h.fmt_ratio(r),
                r.median >= 0.95,
                f"{where}; ours' CPU beyond session.run: {extra:+.2f} ms per text",
            )
        )
    if GUIDE in m.runs:
        r = m.speedup(OURS, GUIDE)
        goals.append(
            h.Goal(
                f"{task}: ours ≥ 2 × the guide's way on the mixed-length corpus",
                h.fmt_ratio(r),
                r.median >= 2.0,
                f"{where}; {pad_note}",
            )
        )
    return lines, goals


def missing_bundled() -> list[str]:
    return [
        f"{name} ({task})"
        for task, name in _models.ERNIE_BUNDLED.items()
        if _models.bundled(task) is None
    ]


def h_table(m: h.Measurement, rss: dict[str, float] | None, notes: dict[str, str]) -> str:
    return c.table(h.throughput_header(rss is not None), h.throughput_rows(m, OURS, rss, notes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=2, seconds=300)
    p.add_argument(
        "--subjects",
        default="token_cls,seq_cls,bundled",
        help="models: token_cls, seq_cls (medium-shaped), bundled (each bundled default model)",
    )
    p.add_argument(
        "--paddle-subjects",
        default="token_cls",
        help="models with the Paddle Inference contenders [token_cls: the encoder is the same]",
    )
    p.set_defaults(contenders=",".join(DEFAULT_CONTENDERS))
    args = h.finish_args(p.parse_args(argv), repeats=2)
    args.paddle_subjects = [t for t in args.paddle_subjects.split(",") if t]
    stack = [f"paddlepaddle {c.version('paddlepaddle')}", f"paddlenlp {c.version('paddlenlp')}"]
    machine = c.machine_line(stack)
    c.progress(f"machine: {machine}")
    s = setup(args.quick)
    keys = set(args.subjects.split(","))
    subjects = [
        x for x in s.subjects() if x.key in keys or ("bundled" in keys and x.static_dir is None)
    ]  # building (or finding) every model before any timing
    h.start_clock(args)
    lines = h.section_head(
        "## ERNIE on ONNX Runtime: the limit, ours, the guide's way, Paddle Inference",
        args,
        "cmp_runtime.py",
        machine,
    )
    lines += [
        f"Models: PaddleNLP ERNIE token_cls / seq_cls, {s.shape.describe()}, random init, "
        "`save_pretrained`, converted with `ernie_deploy.convert.paddle.convert_paddle` "
        "(paddle2onnx, opset 13), at max_seq_length 512 for every contender (no corpus text is "
        "cut or windowed); Paddle Inference runs `paddle.jit.save` of the same weights. The "
        "bundled default models as shipped, at their own max_seq_length.",
        f"Corpus: {s.corpus.description}. Batches of {BATCH}, {args.repeats} repeats, "
        "interleaved; "
        "tokens/s counts real tokens ([CLS]/[SEP] included, padding not). ours ÷ this: ours' "
        "throughput over the contender's, per repeat (above 1: ours is faster). Padding: "
        "tokens run / real tokens. Paddle Inference runs in the "
        f"{', '.join(args.paddle_subjects) or 'no'} table(s) only (the encoder is the same).",
        f"Peak RSS: a fresh process that loads the contender and predicts the {h.PROBE_TEXTS} "
        f"longest texts once (one full batch), measured for {subjects[0].key} only.",
        "",
    ]
    absent = missing_bundled()
    if absent and "bundled" in keys:
        lines += [f"Bundled models not in this checkout (not measured): {', '.join(absent)}.", ""]
    # The bundled models take seconds a repeat and the medium shape minutes: measure them
    # first so the time budget cuts repeats of the slow tables, not of the fast ones.
    order = sorted(range(len(subjects)), key=lambda i: subjects[i].static_dir is not None)
    measured = {i: measure_task(s, subjects[i], args) for i in order}
    runs = [measured[i] for i in range(len(subjects))]
    # peak RSS after every timing (it is the first thing a spent budget drops)
    rss = _rss.rss_column("cmp_runtime", subjects[0].key, list(runs[0].m.runs), args)
    goals: list[h.Goal] = []
    for i, (x, run) in enumerate(zip(subjects, runs)):
        body, g = report_task(s, x, run, rss if i == 0 else None, args)
        lines += body
        goals += g
    h.finish(SECTION, lines, machine, args, goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
