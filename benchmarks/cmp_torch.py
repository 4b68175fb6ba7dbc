"""Same BERT weights: ours on ONNX Runtime vs PyTorch eager, transformers pipelines, optimum ORTModel.

A transformers BERT of ERNIE 3.0 medium's shape (random init, seed 0) is saved with
`save_pretrained` and converted with our `convert hf` (optimum's exporter); PyTorch runs the
saved weights, ONNX Runtime the converted file. Per task (token_cls, seq_cls), on the
mixed-length corpus, interleaved in one process:

- ours: `ernie_deploy.load(onnx_dir).predict(texts)`;
- PyTorch eager: the loop a user writes (fast tokenizer on 32 texts at a time in input
  order, padded to the chunk's longest, `model(**batch)` under `torch.inference_mode()`,
  argmax, label names); PyTorch's default attention (SDPA);
- PyTorch eager on our batches: the same model on our length-sorted batches built
  beforehand (the runtime alone, as raw session.run is for ONNX Runtime);
- transformers pipeline on PyTorch (`batch_size=32`; token_cls `aggregation_strategy="simple"`);
- optimum `ORTModelFor...` on our ONNX file + the transformers pipeline.

By default only ours, PyTorch eager and optimum run (the issue's goals; `make bench` has 20
minutes); `--contenders` adds the others by name.

max_seq_length 512 everywhere (no corpus text is cut). Writes the section "torch".

    python benchmarks/cmp_torch.py [--quick] [--tasks token_cls,seq_cls]
"""

from __future__ import annotations

import argparse
import sys
import warnings
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

SECTION = "torch"
TASKS = ("token_cls", "seq_cls")
MAX_LEN = 512
BATCH = 32
OURS, EAGER, EAGER_OURS = "ours", "PyTorch eager", "PyTorch eager, our batches"
PIPE, OPTIMUM = "transformers pipeline (PyTorch)", "optimum ORTModel + pipeline"
# The transformers pipeline on PyTorch and PyTorch on our batches (the runtime alone) are
# left out by default to keep `make bench` within its time: add them with --contenders.
DEFAULT_CONTENDERS = (OURS, EAGER, OPTIMUM)
PIPELINE_TASK = {"token_cls": "token-classification", "seq_cls": "text-classification"}


@dataclass(frozen=True)
class Setup:
    quick: bool
    shape: _models.Shape
    corpus: _data.Corpus

    def hf_dir(self, task: str) -> Path:
        return _models.bert_hf(task, self.shape)

    def onnx_dir(self, task: str) -> Path:
        return _models.bert_onnx(task, self.shape)


def setup(quick: bool) -> Setup:
    corpus = _data.mixed_corpus(48 if quick else 64, seed=0, long_share=0.125, max_chars=300)
    return Setup(quick, _models.shape_for(quick), corpus)


def _torch_model(hf_dir: Path, task: str) -> Any:
    import torch
    import transformers

    torch.set_num_threads(_ours.threads())
    cls = (
        transformers.AutoModelForTokenClassification
        if task == "token_cls"
        else transformers.AutoModelForSequenceClassification
    )
    return cls.from_pretrained(str(hf_dir), local_files_only=True).eval()


def _tokenizer(hf_dir: Path) -> Any:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)


def eager_loop(model: Any, tokenizer: Any, task: str) -> Callable[[list[str]], list[Any]]:
    """What a PyTorch user writes: chunks in input order, padded, argmax, label names."""
    import torch

    id2label = model.config.id2label

    def predict(texts: list[str]) -> list[Any]:
        out: list[Any] = []
        with torch.inference_mode():
            for i in range(0, len(texts), BATCH):
                enc = tokenizer(
                    texts[i : i + BATCH],
                    padding=True,
                    truncation=True,
                    max_length=MAX_LEN,
                    return_tensors="pt",
                )
                logits = model(**enc).logits
                if task == "token_cls":
                    tags = logits.argmax(-1).tolist()
                    lengths = enc["attention_mask"].sum(-1).tolist()
                    out += [[id2label[t] for t in row[:n]] for row, n in zip(tags, lengths)]
                else:
                    probs = logits.softmax(-1)
                    conf, best = probs.max(-1)
                    out += [(id2label[b], c_) for b, c_ in zip(best.tolist(), conf.tolist())]
        return out

    return predict


def eager_batches(model: Any, batches: list[dict]) -> Callable[[list[str]], None]:
    import torch

    names = ("input_ids", "attention_mask", "token_type_ids")

    def run(_texts: list[str]) -> None:
        with torch.inference_mode():
            for features in batches:
                model(**{n: torch.from_numpy(features[n]) for n in names}).logits.numpy()

    return run


def _pipeline(task: str, model: Any, tokenizer: Any) -> Callable[[list[str]], Any]:
    import transformers

    kwargs: dict[str, Any] = {"batch_size": BATCH, "device": "cpu"}
    if task == "token_cls":
        kwargs["aggregation_strategy"] = "simple"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = transformers.pipeline(
            PIPELINE_TASK[task], model=model, tokenizer=tokenizer, **kwargs
        )
    extra = {"truncation": True, "max_length": MAX_LEN} if task == "seq_cls" else {}
    return lambda texts: pipe(texts, **extra)


def _ort_model(onnx_dir: Path, task: str) -> Any:
    import optimum.onnxruntime as ortm

    cls = (
        ortm.ORTModelForTokenClassification
        if task == "token_cls"
        else ortm.ORTModelForSequenceClassification
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(str(onnx_dir), file_name="model.onnx", local_files_only=True)


def factories(s: Setup, task: str) -> dict[str, Callable[[], h.Contender]]:
    texts = s.corpus.texts
    hf_dir, onnx_dir = s.hf_dir(task), s.onnx_dir(task)

    def ours_predictor() -> Any:
        return _ours.load(onnx_dir, task, MAX_LEN, BATCH)

    def our_padding() -> float:
        rb = _ours.raw_batches(ours_predictor(), texts)
        return rb.padded_tokens / rb.real_tokens

    def input_order_padding() -> float:
        tok = _tokenizer(hf_dir)
        run = sum(
            len(
                tok(texts[i : i + BATCH], padding=True, truncation=True, max_length=MAX_LEN)[
                    "input_ids"
                ][0]
            )
            * len(texts[i : i + BATCH])
            for i in range(0, len(texts), BATCH)
        )
        return run / _ours.raw_batches(ours_predictor(), texts).real_tokens

    def ours() -> h.Contender:
        how = "ernie_deploy.load(dir).predict(texts)"
        return h.Contender(OURS, ours_predictor().predict, how, our_padding())

    def eager() -> h.Contender:
        fn = eager_loop(_torch_model(hf_dir, task), _tokenizer(hf_dir), task)
        how = "fast tokenizer, 32 per batch in input order, inference_mode, argmax"
        return h.Contender(EAGER, fn, how, input_order_padding())

    def eager_ours() -> h.Contender:
        batches = _ours.feature_batches(ours_predictor(), texts)
        fn = eager_batches(_torch_model(hf_dir, task), batches)
        return h.Contender(EAGER_OURS, fn, "model only, our length-sorted batches", our_padding())

    def pipe() -> h.Contender:
        fn = _pipeline(task, _torch_model(hf_dir, task), _tokenizer(hf_dir))
        how = "pipeline(batch_size=32" + (
            ', aggregation_strategy="simple")' if task == "token_cls" else ")"
        )
        return h.Contender(PIPE, fn, how, input_order_padding())

    def optimum() -> h.Contender:
        fn = _pipeline(task, _ort_model(onnx_dir, task), _tokenizer(hf_dir))
        how = "ORTModel on our model.onnx, same pipeline"
        return h.Contender(OPTIMUM, fn, how, input_order_padding())

    return {OURS: ours, EAGER: eager, EAGER_OURS: eager_ours, PIPE: pipe, OPTIMUM: optimum}


def probe(table: str, name: str, quick: bool) -> tuple[list[str], Callable[[], h.Contender]]:
    s = setup(quick)
    return h.probe_texts(s.corpus.texts), factories(s, table)[name]


def measure_task(s: Setup, task: str, args: argparse.Namespace) -> h.TaskRun:
    texts = s.corpus.texts
    contenders, missing = h.make_all(factories(s, task), task, args.contenders)
    tokens = _ours.count_tokens(_ours.load(s.onnx_dir(task), task, MAX_LEN, BATCH), texts)
    warm = h.warmup_texts(texts)
    m = h.measure(contenders, texts, tokens, args.repeats, warm, task, args.deadline)
    return h.TaskRun(task, m, {k.name: k.note for k in contenders}, missing)


def report_task(
    s: Setup, run: h.TaskRun, rss: dict[str, float] | None, args: argparse.Namespace
) -> tuple[list[str], list[h.Goal]]:
    task, m, missing = run.task, run.m, run.missing
    rows = h.throughput_rows(m, OURS, rss, run.notes)
    lines = [f"### {task}", "", c.table(h.throughput_header(rss is not None), rows), ""]
    lines += [f"- {name}: not measured, it failed to load here: {why}" for name, why in missing]
    if (cut := m.cut_note(args.repeats)) is not None:
        lines.append(f"- {cut}")
    goals = []
    for name, bound in ((EAGER, 1.5), (OPTIMUM, 1.2)):
        if name in m.runs:
            r = m.speedup(OURS, name)
            goals.append(
                h.Goal(
                    f"{task}: ours ≥ {bound} × {name} on the same weights",
                    h.fmt_ratio(r),
                    r.median >= bound,
                    f"BERT, {s.shape.short}, mixed corpus",
                )
            )
        else:
            why = dict(missing).get(name, "not run")
            goals.append(h.Goal(f"{task}: ours ≥ {bound} × {name}", "—", None, why))
    return lines, goals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_common_args(p, repeats=3, seconds=240)
    p.add_argument("--tasks", default=",".join(TASKS), help="token_cls,seq_cls")
    p.set_defaults(contenders=",".join(DEFAULT_CONTENDERS))
    args = h.finish_args(p.parse_args(argv), repeats=3)
    tasks = [t for t in args.tasks.split(",") if t]
    stack = [
        f"torch {c.version('torch')}",
        f"transformers {c.version('transformers')}",
        f"optimum-onnx {c.version('optimum-onnx')}",
    ]
    machine = c.machine_line(stack)
    c.progress(f"machine: {machine}")
    s = setup(args.quick)
    for task in tasks:  # build (or find) every model before any timing
        s.onnx_dir(task)
    h.start_clock(args)
    lines = h.section_head(
        "## Same weights: ours vs PyTorch eager and optimum ORTModel + transformers pipeline",
        args,
        "cmp_torch.py",
        machine,
    )
    lines += [
        f"Model: transformers BERT, {s.shape.describe()}, random "
        "init, `save_pretrained`; ONNX by `ernie_deploy.convert.hf.convert_hf` (optimum's "
        f"exporter). PyTorch threads = ONNX Runtime intra-op threads = {_ours.threads()}.",
        f"Corpus: {s.corpus.description}. max_seq_length {MAX_LEN}, batches of {BATCH}, "
        f"{args.repeats} repeats, interleaved; tokens/s counts real tokens. ours ÷ this: ours' "
        "throughput over the contender's, per repeat. Padding: tokens run / real tokens.",
        f"Peak RSS: a fresh process that loads the contender and predicts the {h.PROBE_TEXTS} "
        f"longest texts once, measured for {tasks[0]} only.",
        "",
    ]
    runs = [measure_task(s, task, args) for task in tasks]
    # peak RSS after every timing (it is the first thing a spent budget drops)
    rss = _rss.rss_column("cmp_torch", tasks[0], list(runs[0].m.runs), args)
    goals: list[h.Goal] = []
    for i, run in enumerate(runs):
        body, g = report_task(s, run, rss if i == 0 else None, args)
        lines += body
        goals += g
    h.finish(SECTION, lines, machine, args, goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
