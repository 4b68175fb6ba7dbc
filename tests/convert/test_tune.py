"""`tune`: restricted candidate sets on tiny models, the bound, the eval file, OUT's rules, the CLI.

No test asserts a time. Where the choice depends on which variant is faster, the timing is
replaced by a fixed one (`fake_timing`), so the test checks the selection, not the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import ernie_deploy
from ernie_deploy.cli import app
from ernie_deploy.convert import tune_measure
from ernie_deploy.convert.tune import choose, cpu_preset, gpu_kinds, plan_variants, tune
from ernie_deploy.convert.tune_report import REPORT_NAME, TuneBound
from ernie_deploy.convert.verify import DEFAULT_TOLERANCE
from ernie_deploy.errors import ConfigError, InputError, OutputExistsError
from tests import _lookup
from tests._models import RefModel

pytest.importorskip("onnxruntime.quantization")

NER_TEXTS = [
    "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
    "乔丹、科比、詹姆斯和姚明。",
    "好",
    "张三在上海市浦东新区工作。",
]
# The crafted classifier (`trap_cls`): ordinary characters score "neg" by a wide margin; the
# trap characters score "pos" by 0.02, less than half of int8's step (8 / 127), so int8
# rounds both logits to 0 and the tie goes to "neg": int8 flips exactly the trap texts.
SAFE_TEXTS = ["北京的涮肉", "重庆的火锅", "成都的小吃", "都是极具特色的美食", "好吃"]
TRAPS = "甲乙丙丁"
TRAP_TEXTS = ["甲", "乙丙", "丁甲", "丙"]
FAST_INT8 = {"fp32": 1.0, "int8": 0.5, "int8-per-channel": 0.8}  # seconds per run


@pytest.fixture(scope="module")
def trap_cls(tmp_path_factory: pytest.TempPathFactory, chinese_vocab: Path) -> Path:
    d = tmp_path_factory.mktemp("trap") / "cls"
    d.mkdir()
    lines = chinese_vocab.read_text(encoding="utf-8").rstrip("\n").split("\n")
    ids = {token: i for i, token in enumerate(lines)}
    table = np.tile(np.array([[1.0, -1.0]], np.float32), (len(lines), 1))
    for special in ("[PAD]", "[CLS]", "[SEP]"):
        table[ids[special]] = 0.0
    for ch in TRAPS:
        table[ids[ch]] = (0.0, 0.02)
    table[ids["[unused1]"]] = (-8.0, 8.0)  # sets int8's scale: one step is 8 / 127
    (d / "vocab.txt").write_bytes(chinese_vocab.read_bytes())
    _lookup.build_bag_classifier(d / "model.onnx", len(lines), 2, table=table)
    config = {"task": "seq_cls", "labels": ["neg", "pos"], "max_seq_length": 32}
    (d / "ernie_deploy.json").write_text(json.dumps(config), encoding="utf-8")
    return d


@pytest.fixture
def fake_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timed run takes FAST_INT8[variant] seconds (1.0 for the others)."""

    def time_runs(work: dict, repeats: int, progress: object) -> dict[str, list[float]]:
        return {name: [FAST_INT8.get(name, 1.0)] * repeats for name in work}

    monkeypatch.setattr(tune_measure, "time_runs", time_runs)


def write_eval(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{t}\t{label}\n" for t, label in rows), encoding="utf-8")
    return path


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_restricted_set_picks_writes_and_reports(paddle_ner: RefModel, tmp_path: Path) -> None:
    before = sorted(p.name for p in paddle_ner.path.iterdir())
    out = tmp_path / "tuned"
    report = tune(
        paddle_ner.path,
        out,
        texts=NER_TEXTS,
        candidates=["O1", "int8", "int8-rows"],
        repeats=1,
        serving=False,
    )
    assert [v.name for v in report.variants] == ["fp32", "O1", "int8", "int8-rows"]
    assert report.winner in {"fp32", "O1", "int8", "int8-rows"} and report.task == "token_cls"
    for v in report.variants:
        assert v.error is None and v.agreement is not None and v.texts_per_s is not None
        assert 0.0 <= v.agreement.agreement <= 1.0 and v.agreement.argmax is not None
    fp32 = report.variant("fp32")
    assert fp32.agreement is not None and fp32.agreement.max_abs_diff == 0.0
    assert report.explanation.startswith(report.winner)
    # dynamic int8 scales activations per batch: a text's outputs follow its batch mates
    drift = {v.name: v.batch_drift for v in report.variants}
    assert None not in drift.values()
    assert max(drift["fp32"], drift["O1"], drift["int8-rows"]) <= 1e-5
    assert drift["int8"] > DEFAULT_TOLERANCE
    assert [r[0] for r in report.rows() if "batch drift" in r[5]] == ["int8"]
    warned = any("depend on the batch" in line for line in report.lines())
    assert warned == (report.winner == "int8")
    # OUT is a model directory that loads, with the report naming every candidate
    results = ernie_deploy.load(out).predict(NER_TEXTS)
    assert len(results) == len(NER_TEXTS)
    data = json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
    assert data["winner"] == report.winner and data["agreement_measure"] == "entities identical"
    assert [v["name"] for v in data["variants"]] == ["fp32", "O1", "int8", "int8-rows"]
    for v in data["variants"]:
        assert v["texts_per_s"] > 0 and "agreement" in v["agreement"] and v["size_mb"] > 0
        assert v["batch_drift"] == drift[v["name"]]
    assert leftovers(tmp_path, {"tuned"}) == []  # no scratch or staging directory left
    assert sorted(p.name for p in paddle_ner.path.iterdir()) == before
    header, rows = report.header(), report.rows()
    assert all(len(r) == len(header) for r in rows)
    assert sum(r[-1] == "CHOSEN" for r in rows) == 1


def test_bound_nothing_meets_keeps_fp32(trap_cls: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = tune(
        trap_cls,
        out,
        texts=SAFE_TEXTS,
        candidates=["int8", "int8-per-channel"],
        bound=TuneBound(max_abs_diff=0.0),
        repeats=1,
        serving=False,
    )
    assert report.winner == "fp32"
    assert report.explanation.startswith("fp32 kept")
    for name in ("int8", "int8-per-channel"):
        v = report.variant(name)
        assert not v.eligible and v.miss is not None and "max abs diff" in v.miss
    assert (out / "model.onnx").read_bytes() == (trap_cls / "model.onnx").read_bytes()
    assert ernie_deploy.load(out).predict(SAFE_TEXTS)[0].label == "neg"


def test_eval_file_changes_the_choice(trap_cls: Path, tmp_path: Path, fake_timing: None) -> None:
    # without an eval file: int8 agrees on the texts and is the fastest, so it is chosen
    plain = tune(trap_cls, tmp_path / "plain", texts=SAFE_TEXTS, candidates=["int8"], serving=False)
    assert plain.winner == "int8", plain.explanation
    assert plain.variant("int8").agreement.agreement == 1.0  # type: ignore[union-attr]
    # the labelled file has the texts int8 flips: its accuracy falls, fp32 is kept
    gold = write_eval(
        tmp_path / "gold.tsv",
        [(t, "neg") for t in SAFE_TEXTS] + [(t, "pos") for t in TRAP_TEXTS],
    )
    scored = tune(
        trap_cls,
        tmp_path / "scored",
        texts=SAFE_TEXTS,
        eval_file=gold,
        candidates=["int8"],
        serving=False,
    )
    assert scored.metric == "accuracy" and scored.winner == "fp32"
    int8 = scored.variant("int8")
    assert int8.evaluation is not None and int8.miss is not None and "accuracy" in int8.miss
    assert int8.evaluation.delta("accuracy") == pytest.approx(-len(TRAP_TEXTS) / 9)
    assert dict(scored.variant("fp32").evaluation.reference)["accuracy"] == 1.0  # type: ignore[union-attr]
    assert "int8 was faster" in scored.explanation
    data = json.loads((tmp_path / "scored" / REPORT_NAME).read_text(encoding="utf-8"))
    assert data["variants"][1]["metric_delta_points"] == pytest.approx(-100 * 4 / 9)


def test_output_rules(trap_cls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = {"texts": SAFE_TEXTS, "candidates": ["int8"], "repeats": 1, "serving": False}
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        tune(trap_cls, out, **quick)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="new output directory"):
        tune(trap_cls, trap_cls, overwrite=True, **quick)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="new output directory"):
        tune(trap_cls / "model.onnx", trap_cls.parent, overwrite=True, **quick)  # type: ignore[arg-type]
    assert (trap_cls / "model.onnx").is_file()

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_measure, "time_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(trap_cls, out, overwrite=True, **quick)  # type: ignore[arg-type]
    assert (out / "keep.txt").is_file()  # the old OUT is untouched
    with pytest.raises(KeyboardInterrupt):
        tune(trap_cls, tmp_path / "new", **quick)  # type: ignore[arg-type]
    assert leftovers(tmp_path, {"out"}) == []
    monkeypatch.undo()

    report = tune(trap_cls, out, overwrite=True, **quick)  # type: ignore[arg-type]
    assert not (out / "keep.txt").exists() and (out / REPORT_NAME).is_file()
    assert report.out == out
    bad = write_eval(tmp_path / "bad.tsv", [("北京", "sports")])
    with pytest.raises(InputError, match="sports"):
        tune(trap_cls, tmp_path / "x", eval_file=bad, **quick)  # type: ignore[arg-type]
    assert leftovers(tmp_path, {"out", "bad.tsv"}) == []


def test_plan_presets_and_gpu_gate() -> None:
    assert cpu_preset("aarch64") == "arm64"
    assert cpu_preset("x86_64", frozenset({"avx2", "avx512bw", "avx512_vnni"})) == "avx512_vnni"
    assert cpu_preset("x86_64", frozenset({"avx2", "amx_int8"})) == "avx512_vnni"
    assert cpu_preset("x86_64", frozenset({"avx2", "avx512bw"})) == "avx512"
    assert cpu_preset("x86_64", frozenset({"avx2"})) == "avx2"
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    trt = "TensorrtExecutionProvider"
    assert gpu_kinds([cpu]) == ()
    assert gpu_kinds([cuda, cpu], lambda i: (6, 1)) == ()  # no tensor cores
    assert gpu_kinds([cuda, cpu], lambda i: None) == ()
    assert gpu_kinds([cuda, cpu], lambda i: (7, 0)) == ("cuda",)
    assert gpu_kinds([trt, cuda, cpu], lambda i: (9, 0)) == ("cuda", "tensorrt")
    names = [v.name for v in plan_variants("avx2")]
    assert names == ["fp32", "O1", "O2", "O3", "int8", "int8-per-channel", "int8-rows", "O2+int8"]
    gpu = plan_variants("avx2", ("cuda", "tensorrt"))
    assert [(v.name, v.device, v.fp16) for v in gpu[-2:]] == [
        ("O2+fp16@cuda", "cuda", True),
        ("fp16@tensorrt", "tensorrt", True),
    ]
    assert [v.name for v in choose(plan_variants("avx2"), ["int8"])] == ["fp32", "int8"]
    with pytest.raises(ConfigError, match="O2\\+fp16@cuda.*compute capability|choose from"):
        choose(plan_variants("avx2"), ["O2+fp16@cuda"])
    with pytest.raises(ConfigError, match="min_agreement"):
        TuneBound(min_agreement=99.9)


def test_agreement_measures() -> None:
    ref = tune_measure.Answers(
        (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 0.1])), (0, 2, 0)
    )
    same = tune_measure.agreement("embedding", ref, ref)
    assert same.agreement == 1.0 and same.cosine_min == pytest.approx(1.0)
    turned = tune_measure.Answers(
        (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.1, 1.0])), (2, 2, 1)
    )
    moved = tune_measure.agreement("embedding", ref, turned)
    assert moved.agreement == pytest.approx(1 / 3) and moved.cosine_min < 0.3
    scores = tune_measure.Answers((np.array([3.0, 2.0, 1.0]),), (0,))
    flipped = tune_measure.Answers((np.array([1.0, 2.0, 3.0]),), (2,))
    rr = tune_measure.agreement("rerank", scores, flipped)
    assert rr.agreement == 0.0 and rr.kendall_tau == pytest.approx(-1.0)
    assert tune_measure.agreement("rerank", scores, scores).kendall_tau == pytest.approx(1.0)
    groups = tune_measure.rerank_groups([f"t{i}" for i in range(20)])
    assert len(groups) == tune_measure.RERANK_QUERIES and all(len(d) == 8 for _, d in groups)


def test_vocab_corpus_and_cli(trap_cls: Path, tmp_path: Path, fake_timing: None) -> None:
    corpus = tune_measure.vocab_corpus(trap_cls, n=20, max_tokens=30)
    assert len(corpus) == 20 and all(t.strip() and "[" not in t for t in corpus)
    assert corpus == tune_measure.vocab_corpus(trap_cls, n=20, max_tokens=30)  # seeded
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["tune", str(trap_cls), str(out), "--candidates", "int8", "--no-serving"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "CHOSEN" in result.stdout and "int8 chosen" in result.stdout
    assert (out / REPORT_NAME).is_file()
    assert json.loads((out / REPORT_NAME).read_text("utf-8"))["corpus"].startswith("made from")
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    wrong = runner.invoke(app, [*args[:3], "--candidates", "O9", "--overwrite"])
    assert wrong.exit_code == 1 and "choose from" in wrong.output


def test_gpu_variant_that_cannot_run_is_reported(
    trap_cls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU the probe reports but ORT cannot use: the variant is listed as not run, fp32 kept."""
    from ernie_deploy.convert import tune as tune_module

    monkeypatch.setattr(tune_module, "gpu_kinds", lambda: ("cuda",))
    report = tune(
        trap_cls,
        tmp_path / "out",
        texts=SAFE_TEXTS,
        candidates=["O2+fp16@cuda"],
        repeats=1,
        serving=False,
    )
    gpu = report.variant("O2+fp16@cuda")
    assert gpu.error and gpu.device == "cuda" and gpu.fp16 and not gpu.eligible
    assert report.winner == "fp32"
    assert any(r[0] == "O2+fp16@cuda" and r[-1].startswith("not run") for r in report.rows())


def test_choice_goes_by_the_median_run(
    trap_cls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faster in most runs wins (flagged when slower in one); slower in most runs does not."""
    walls = {"fp32": [1.0, 1.0, 1.0], "int8": [0.5, 0.6, 1.2]}
    monkeypatch.setattr(tune_measure, "time_runs", lambda work, repeats, progress: walls)
    quick = {"texts": SAFE_TEXTS, "candidates": ["int8"], "serving": False}
    report = tune(trap_cls, tmp_path / "a", **quick)  # type: ignore[arg-type]
    int8 = report.variant("int8")
    assert int8.eligible and not int8.steady and int8.speedup is not None
    assert int8.speedup.median == pytest.approx(1 / 0.6)
    assert report.winner == "int8" and "slower than fp32 in some" in report.explanation
    walls["int8"] = [1.2, 1.1, 0.5]
    report = tune(trap_cls, tmp_path / "b", **quick)  # type: ignore[arg-type]
    assert report.winner == "fp32" and report.explanation.startswith("fp32 kept: no variant")
    assert report.rows()[1][-1] == "within bound; slower than fp32 in some runs"


def test_a_variant_that_fails_to_run_is_reported(
    trap_cls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ernie_deploy.errors import ModelRunError

    real = tune_measure.answers

    def answers(predictor: object, task: str, texts: list[str]) -> tune_measure.Answers:
        if "int8" in str(predictor.model.path.parent.name):  # type: ignore[attr-defined]
            raise ModelRunError("ONNX Runtime failed while running int8 (test).")
        return real(predictor, task, texts)

    monkeypatch.setattr(tune_measure, "answers", answers)
    report = tune(trap_cls, tmp_path / "out", texts=SAFE_TEXTS, candidates=["int8"], serving=False)
    assert report.winner == "fp32" and "failed while running" in str(report.variant("int8").error)


@pytest.mark.parametrize(
    ("task", "width", "output"), [("embedding", 8, "pooler_output"), ("rerank", 1, "logits")]
)
def test_embedding_and_rerank_models(
    chinese_vocab: Path, tmp_path: Path, task: str, width: int, output: str
) -> None:
    """Bag-of-tokens graphs as an embedder (pooled output) and a one-logit reranker."""
    d = tmp_path / task
    d.mkdir()
    (d / "vocab.txt").write_bytes(chinese_vocab.read_bytes())
    size = len(chinese_vocab.read_text(encoding="utf-8").rstrip("\n").split("\n"))
    _lookup.build_bag_classifier(d / "model.onnx", size, width, seed=3, output_name=output)
    (d / "ernie_deploy.json").write_text(json.dumps({"task": task}), encoding="utf-8")
    texts = NER_TEXTS + SAFE_TEXTS
    report = tune(d, tmp_path / "out", texts=texts, candidates=["int8"], repeats=1, serving=False)
    int8 = report.variant("int8").agreement
    assert int8 is not None and report.task == task
    if task == "embedding":
        assert (
            int8.cosine_min is not None and 0.5 < int8.cosine_min <= int8.cosine_mean <= 1.0 + 1e-6
        )
        assert int8.items == len(texts)
    else:
        assert int8.kendall_tau is not None and -1.0 <= int8.kendall_tau <= 1.0
        assert int8.items == len(texts)  # one query per text (fewer than RERANK_QUERIES)
    assert (tmp_path / "out" / REPORT_NAME).is_file()
