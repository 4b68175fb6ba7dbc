"""Install extras: a pip dry run of each runtime extra ends with exactly one ONNX Runtime build.

onnxruntime and onnxruntime-gpu both install the `onnxruntime/` module folder; with both present
the CUDA provider can go missing (ORT issue #26996). Core therefore has no ORT requirement and
`[cpu]`, `[gpu]` (CUDA 13) and `[gpu-cu12]` each bring one build. One resolve per extra (~10 s
each, metadata only: nothing is downloaded but wheel metadata from the package registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[2]
ORT = {"onnxruntime", "onnxruntime-gpu"}
_OFFLINE = ("Network is unreachable", "Could not fetch URL", "NewConnectionError", "timed out")


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_core_has_no_onnxruntime_and_each_extra_one_build() -> None:
    project = _project()
    core = {Requirement(r).name for r in project["dependencies"]}  # type: ignore[union-attr]
    assert not core & ORT
    extras = project["optional-dependencies"]  # type: ignore[index]
    for name, build in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        assert [Requirement(r).name for r in extras[name]] == [build]
    assert [Requirement(r).name for r in extras["gpu-cu12"]] == ["onnxruntime-gpu"]
    # No other extra may bring a runtime build back beside the GPU one.
    for name, requirements in extras.items():
        if name not in ("cpu", "gpu", "gpu-cu12"):
            assert not {Requirement(r).name for r in requirements} & ORT, name


def _setuptools_builds_us() -> bool:
    """Is the installed setuptools one that pyproject's build-system accepts?"""
    try:
        import setuptools
    except ImportError:
        return False
    table = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    spec = next(r for r in table["build-system"]["requires"] if r.startswith("setuptools"))
    return Version(setuptools.__version__) in Requirement(spec).specifier


def _resolve(extra: str, tmp_path: Path) -> dict[str, Version]:
    report = tmp_path / f"{extra}.json"
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
        "--only-binary", ":all:", "--report", str(report), f"{ROOT}[{extra}]",
    ]  # fmt: skip
    if _setuptools_builds_us():
        cmd.insert(4, "--no-build-isolation")  # ~3 s faster than fetching setuptools each time
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        if any(marker in done.stderr for marker in _OFFLINE):
            pytest.skip(f"the package registry is unreachable: {done.stderr.strip()[-200:]}")
        raise AssertionError(done.stderr[-2000:])
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {i["metadata"]["name"].lower(): Version(i["metadata"]["version"]) for i in installs}


@pytest.mark.parametrize(
    ("extra", "build", "cuda13"),
    [
        ("gpu", "onnxruntime-gpu", True),
        ("gpu-cu12", "onnxruntime-gpu", False),
        ("cpu", "onnxruntime", None),
    ],
)
def test_dry_run_installs_one_onnxruntime(
    extra: str, build: str, cuda13: bool | None, tmp_path: Path
) -> None:
    resolved = _resolve(extra, tmp_path)
    assert set(resolved) & ORT == {build}, sorted(resolved)
    if cuda13 is not None:
        # 1.27 is the first CUDA 13 build (driver >= 580); 1.21 the first with preload_dlls().
        version = resolved[build]
        assert (version >= Version("1.27")) is cuda13 and version >= Version("1.21")
