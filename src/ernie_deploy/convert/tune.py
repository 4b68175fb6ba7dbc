"""`tune`: build a model's variants, measure them on this machine, deploy the fastest that agrees.

Candidates (`plan_variants`): fp32 (the reference, always measured), O1 / O2 / O3
(`convert.optimize`), int8 with the preset this CPU's flags call for, per tensor, per
channel and per tensor with one activation scale per token row (`convert.quantize`,
`row_scales`), and O2 then int8. Where ONNX Runtime has the CUDA provider and
the GPU's compute capability is >= 7.0 (`runtime.device.compute_capability`): the O2 graph
loaded with fp16 on CUDA, and fp16 on TensorRT when that provider is there too (those
variants write their fp32 graph to OUT; serve them with `--device cuda|tensorrt --fp16`).

Every variant is built in a scratch directory beside OUT, loaded with the user's batch size,
max_seq_length and threads, and measured by `tune_measure` (interleaved timed runs, agreement
with fp32, the eval file's metric). The fastest variant within the bound (`TuneBound`) wins;
only then is OUT written: the winner's directory plus `tune_report.json`, renamed into place.
A failure or Ctrl-C leaves no OUT and no scratch directory.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ernie_deploy.convert import tune_measure as m
from ernie_deploy.convert.outdir import check_output, model_input
from ernie_deploy.convert.quantize_report import probe_batch
from ernie_deploy.convert.tune_build import (
    Variant,
    build_graphs,
    choose,
    cpu_preset,
    gpu_kinds,
    graph_mb,
    plan_variants,
    write_out,
)
from ernie_deploy.convert.tune_report import (
    ServingAdvice,
    TuneBound,
    TuneReport,
    VariantResult,
    explain,
)
from ernie_deploy.convert.verify import batch_drift
from ernie_deploy.errors import ConfigError, ErnieDeployError, InputError
from ernie_deploy.runtime.device import usable_cpus
from ernie_deploy.runtime.model_dir import ModelFiles, find_model
from ernie_deploy.tasks.labelled import LabelledText
from ernie_deploy.tasks.metrics import ScoreComparison


def tune(
    model: str | Path,
    out: str | Path,
    *,
    texts: Sequence[str] | str | Path | None = None,
    eval_file: str | Path | None = None,
    task: str | None = None,
    candidates: Sequence[str] | None = None,
    bound: TuneBound | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    threads: int | None = None,
    repeats: int = 3,
    serving: bool = True,
    overwrite: bool = False,
    tokenizer_dir: str | Path | None = None,
    progress: m.TuneProgress | None = None,
) -> TuneReport:
    """Pick the fastest variant of a model that keeps its answers on this machine; write it to OUT.

    Args:
        model: a model directory, or an .onnx file inside one (fp32).
        out: the directory to write: the winner's model directory plus `tune_report.json`.
            Written only once the winner is known; never the model's own directory.
        texts: the texts to measure on (a list, or a .txt / .jsonl file); None: a corpus of
            words from the model's vocabulary (tune_measure.vocab_corpus).
        eval_file: a labelled .jsonl / .tsv file (token_cls / seq_cls): each variant's F1 /
            accuracy; the bound then limits the metric's drop.
        task: the model's task when its directory does not say.
        candidates: variant names to try (see `plan_variants`); None: all this machine runs.
        bound: how far a variant may stray from fp32 (TuneBound; default 99.9% agreement, or
            at most 0.5 points of the metric with an eval file).
        batch_size / max_seq_length / threads: as you will deploy (None: the model's own
            max_seq_length, threads sized from the CPUs this process may use).
        repeats: timed runs per variant.
        serving: also measure the winner at other thread counts and batch sizes.
        overwrite: replace an existing OUT.
        tokenizer_dir: where the tokenizer is, when not beside the model.
        progress: receives one bar per variant (tune_measure.TuneProgress).

    Raises:
        OutputExistsError: OUT exists and `overwrite` is false.
        InputError: OUT is the model's directory, or the texts / eval file are unusable.
    """
    started = time.perf_counter()
    bound = bound or TuneBound()
    progress = progress or m.NoProgress()
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, not {repeats}.")
    files = find_model(model, tokenizer_dir)
    _refuse_source(Path(out), files)
    source = [model_input(model, files.onnx_path.parent)]
    out = check_output(out, overwrite, source, [tokenizer_dir, texts])  # texts: maybe a file
    threads = threads or usable_cpus()
    settings = _Settings(task, batch_size, max_seq_length, threads, files.tokenizer_dir)
    fp32 = settings.load(model)
    task = fp32.task
    length = fp32.engine.max_seq_length
    corpus, described = _corpus(texts, files, length)
    scored = _score_fp32(fp32, eval_file, files) if eval_file is not None else None
    metric = scored.metric if scored is not None else None
    preset = cpu_preset()
    plan = choose(plan_variants(preset, gpu_kinds()), candidates)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.tune-", dir=out.parent))
    try:
        steps = 2 + repeats + (1 if scored is not None else 0)
        for v in plan:
            progress.start(v.name, steps)
        graphs = build_graphs(plan, model, files, scratch, preset, task, progress)
        results = _measure(plan, graphs, fp32, settings, corpus, scored, repeats, bound, progress)
        results = _with_drift(results, graphs, plan, probe_batch(files, task))
        winner = max(
            (r for r in results if r.eligible),
            key=lambda r: r.speedup.median if r.speedup else 0.0,
        )
        advice = None
        if serving:
            chosen = next(v for v in plan if v.name == winner.name)
            advice = _serving(chosen, graphs, settings, corpus, task, progress)
        report = TuneReport(
            source=files.onnx_path,
            out=out,
            task=task,
            winner=winner.name,
            explanation=explain(results, winner.name, task),
            variants=results,
            bound=bound,
            metric=metric,
            texts=len(corpus),
            corpus=described,
            batch_size=batch_size,
            max_seq_length=length,
            threads=threads,
            repeats=repeats,
            preset=preset,
            serving=advice,
            seconds=time.perf_counter() - started,
        )
        chosen = next(v for v in plan if v.name == winner.name)
        write_out(report, chosen.graph, graphs[chosen.graph], files, overwrite)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class _Settings:
    """How every variant is loaded: the deployment's settings."""

    task: str | None
    batch_size: int
    max_seq_length: int | None
    threads: int
    tokenizer_dir: Path

    def load(
        self,
        path: str | Path,
        device: str = "cpu",
        fp16: bool = False,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        from ernie_deploy.api import load

        return load(
            path,
            task=self.task,
            device=device,
            fp16=fp16,
            tokenizer_dir=self.tokenizer_dir,
            max_seq_length=self.max_seq_length,
            batch_size=batch_size or self.batch_size,
            threads=threads or self.threads,
            truncate=True,
        )


@dataclass(frozen=True)
class _Scored:
    """The eval file, scored with fp32 before any variant is built (a bad file fails first)."""

    examples: list[LabelledText]
    path: Path
    metric: str
    results: list[Any]
    fp32: ScoreComparison

    def compare(self, predictor: Any, name: str) -> ScoreComparison:
        task = predictor.task
        return m.evaluate(predictor, self.examples, self.path, task, self.results, name)[1]


def _score_fp32(fp32: Any, eval_file: str | Path, files: ModelFiles) -> _Scored:
    from ernie_deploy.convert.quantize_report import read_eval_file

    path = Path(eval_file)
    examples = read_eval_file(path, fp32.task, files)
    results, comparison = m.evaluate(fp32, examples, path, fp32.task, None, "fp32")
    return _Scored(examples, path, m.METRICS[fp32.task], results, comparison)


def _refuse_source(out: Path, files: ModelFiles) -> None:
    target = out.expanduser().resolve()
    for source in {files.onnx_path.parent.resolve(), files.tokenizer_dir.resolve()}:
        if target == source or target in source.parents:
            raise InputError(
                f"{out} holds the source model ({source}): choose a new output directory."
            )


def _corpus(
    texts: Sequence[str] | str | Path | None, files: ModelFiles, length: int
) -> tuple[list[str], str]:
    if texts is None:
        corpus = m.vocab_corpus(files.tokenizer_dir, max_tokens=length)
        return corpus, "made from the model's vocabulary"
    if isinstance(texts, (str, Path)):
        corpus, described = m.read_texts(texts), f"from {texts}"
    else:
        corpus, described = [str(t) for t in texts], "given"
    if len(corpus) < 2 or not all(t.strip() for t in corpus):
        raise InputError(
            "tune needs at least 2 non-empty texts to measure on: pass more texts, or none to "
            "use a corpus made from the model's vocabulary."
        )
    return corpus, described


def _with_drift(
    results: tuple[VariantResult, ...],
    graphs: dict[str, Path | str],
    plan: tuple[Variant, ...],
    probe: dict[str, np.ndarray],
) -> tuple[VariantResult, ...]:
    """Each CPU variant that ran, with its batch drift on the probe batch (verify.batch_drift):
    dynamic int8 answers depend on which texts share a batch; fp32 and O1-O3 do not."""
    where = {v.name: graphs[v.graph] for v in plan}
    out = []
    for r in results:
        graph = where[r.name]
        if r.error is None and r.device == "cpu" and isinstance(graph, Path):
            onnx = graph if graph.suffix == ".onnx" else graph / "model.onnx"
            r = replace(r, batch_drift=batch_drift(onnx, probe))
        out.append(r)
    return tuple(out)


def _measure(
    plan: tuple[Variant, ...],
    graphs: dict[str, Path | str],
    fp32: Any,
    settings: _Settings,
    corpus: list[str],
    scored: _Scored | None,
    repeats: int,
    bound: TuneBound,
    progress: m.TuneProgress,
) -> tuple[VariantResult, ...]:
    task = fp32.task
    loaded: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for v in plan:
        graph = graphs[v.graph]
        try:
            if isinstance(graph, str):
                raise InputError(graph)
            predictor = fp32 if v.name == "fp32" else settings.load(graph, v.device, v.fp16)
        except ErnieDeployError as exc:
            errors[v.name] = str(exc)
            continue
        model = predictor.model
        if v.device != "cpu" and (not model.on_gpu or (v.fp16 and not model.fp16_active)):
            errors[v.name] = " ".join(model.notices) or "it did not run as asked on the GPU"
            continue
        loaded[v.name] = predictor
    reference = m.answers(fp32, task, corpus)
    said: dict[str, m.Answers] = {}
    evals: dict[str, ScoreComparison] = {}
    for name, predictor in list(loaded.items()):
        try:  # a variant that fails to run (ModelRunError) is reported, not fatal
            said[name] = reference if name == "fp32" else m.answers(predictor, task, corpus)
            progress.step(name, "answers")
            if scored is not None:
                evals[name] = scored.fp32 if name == "fp32" else scored.compare(predictor, name)
                progress.step(name, "eval file")
        except ErnieDeployError as exc:
            errors[name] = str(exc)
            del loaded[name]
    work = {name: m.workload(p, task, corpus) for name, p in loaded.items()}
    walls = m.time_runs(work, repeats, progress)
    ups = m.speedups(walls, "fp32")
    items = len(m.rerank_groups(corpus)) if task == "rerank" else len(corpus)
    results = []
    for v in plan:
        if v.name not in loaded:
            results.append(VariantResult(v.name, v.how, v.device, v.fp16, error=errors[v.name]))
            continue
        agree = m.agreement(task, reference, said[v.name])
        evaluation = evals.get(v.name)
        metric = scored.metric if scored is not None else None
        miss = None if v.name == "fp32" else bound.misses(agree, evaluation, metric)
        results.append(
            VariantResult(
                v.name,
                v.how,
                v.device,
                v.fp16,
                size_mb=graph_mb(loaded[v.name].model.path),
                texts_per_s=m.Spread.of([items / w for w in walls[v.name]]),
                speedup=ups[v.name],
                agreement=agree,
                evaluation=evaluation,
                miss=miss,
            )
        )
    return tuple(results)


def _serving(
    chosen: Variant,
    graphs: dict[str, Path | str],
    settings: _Settings,
    corpus: list[str],
    task: str,
    progress: m.TuneProgress,
) -> ServingAdvice:
    path = graphs[chosen.graph]
    assert not isinstance(path, str)
    threads, batches = m.serving_options(usable_cpus(), settings.batch_size)
    repeats = 2
    progress.start("serving", len(threads) * len(batches) * repeats)
    points = m.serving_grid(
        lambda t, b: settings.load(path, chosen.device, chosen.fp16, threads=t, batch_size=b),
        task,
        corpus,
        threads,
        batches,
        repeats,
        progress,
    )
    return ServingAdvice(tuple(points))
