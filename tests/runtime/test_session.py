"""Runtime layer: device parsing, providers, threads, feeding by declared names and dtypes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import ernie_deploy
from ernie_deploy import errors
from ernie_deploy.runtime import device as device_mod
from ernie_deploy.runtime.device import Device, parse_device, resolve_providers, usable_cpus
from ernie_deploy.runtime.session import FallbackWarning, RuntimeConfig, load_model
from tests import _lookup


def test_parse_device() -> None:
    assert parse_device("auto") == Device("auto")
    assert parse_device("CPU") == Device("cpu")
    assert parse_device("cuda:1") == Device("cuda", 1)
    assert parse_device("gpu") == Device("cuda", 0)
    assert parse_device("tensorrt") == Device("tensorrt", 0)
    for bad in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(errors.ConfigError):
            parse_device(bad)


def test_missing_gpu_provider_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(errors.ProviderNotAvailableError, match=r"ernie-deploy\[gpu\]"):
        resolve_providers(Device("cuda"))
    assert resolve_providers(Device("auto")) == [("CPUExecutionProvider", {})]


def test_usable_cpus_respects_affinity() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_cgroup_quota_caps_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_cgroup_cpu_limit", lambda: 1.5)
    assert usable_cpus() == 1


def test_threads_default_to_usable_cpus(lookup_ner: Path) -> None:
    from ernie_deploy.runtime.session import build_session_options

    opts = build_session_options(RuntimeConfig())
    assert opts.intra_op_num_threads == usable_cpus()  # type: ignore[attr-defined]
    assert build_session_options(RuntimeConfig(intra_op_threads=1)).intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_cuda_fallback_is_reported(lookup_ner: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend CUDA is installed: ORT then places the graph on the CPU, which must be reported.
    monkeypatch.setattr(
        device_mod, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(lookup_ner / "model.onnx", RuntimeConfig(device="cuda"))
    assert not model.on_gpu
    assert any(issubclass(w.category, FallbackWarning) for w in caught)
    assert any("placed the model on the CPU" in n for n in model.notices)


def test_fp16_on_cpu_keeps_fp32_with_guide_notice(lookup_ner: Path) -> None:
    model = load_model(lookup_ner / "model.onnx", RuntimeConfig(device="cpu", fp16=True))
    assert not model.fp16_active
    assert model.notices == ("use_fp16 only takes effect when deploying on gpu ...",)


@pytest.mark.parametrize(
    "options",
    [
        {"int32_inputs": True, "extra_inputs": ("attention_mask", "token_type_ids")},
        {"extra_inputs": ("position_ids", "attention_mask")},
        {"extra_inputs": ("segment_ids",), "output_name": "save_infer_model/scale_0.tmp_0"},
        {"extra_inputs": ()},
    ],
)
def test_graph_inputs_fed_by_name_and_dtype(
    tmp_path: Path, chinese_vocab: Path, options: dict[str, object]
) -> None:
    d = _lookup.lookup_ner_dir(tmp_path / "m", chinese_vocab, **options)  # type: ignore[arg-type]
    ner = ernie_deploy.load(d)
    assert [(e.text, e.label) for e in ner("乔丹在北京")[0].entities] == [
        ("乔丹", "PER"),
        ("北京", "LOC"),
    ]


def test_unfeedable_graph_input_is_rejected(tmp_path: Path, chinese_vocab: Path) -> None:
    d = _lookup.lookup_ner_dir(tmp_path / "m", chinese_vocab, extra_inputs=("pixel_values",))
    with pytest.raises(errors.UnsupportedGraphError, match="pixel_values"):
        ernie_deploy.load(d)


def test_outputs_read_by_name(lookup_ner: Path) -> None:
    model = load_model(lookup_ner / "model.onnx", RuntimeConfig(device="cpu"))
    feeds = {"input_ids": np.array([[1, 2, 3]]), "token_type_ids": np.zeros((1, 3), np.int64)}
    out = model.run(feeds, ["logits"])
    assert list(out) == ["logits"] and out["logits"].shape == (1, 3, 7)


def test_weights_left_behind_are_named(tmp_path: Path) -> None:
    from ernie_deploy.runtime.bundled import bundled_path

    shipped = bundled_path("e5-small-zh-en")
    assert shipped is not None
    parts = sorted(p.name for p in shipped.iterdir() if ".onnx.data" in p.name)
    assert len(parts) >= 2  # split external data: the case users copy by halves
    moved = tmp_path / "copied"
    moved.mkdir()
    for f in shipped.iterdir():
        if f.name not in parts[1:]:  # the graph and its first part come along, the rest not
            (moved / f.name).symlink_to(f)
    with pytest.raises(errors.ModelLoadError) as err:
        ernie_deploy.load(moved)
    message = str(err.value)
    assert f"keeps its weights in {', '.join(parts[1:])}, which" in message  # not {parts[0]}
    assert f"copy it into {moved}" in message or f"copy them into {moved}" in message
