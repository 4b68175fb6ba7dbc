#!/usr/bin/env python3
"""The GPU check: proves the CUDA / TensorRT path on the first machine with an NVIDIA GPU (not a test).

    python3 benchmarks/gpu_check.py --wheel /path/onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
    make gpu-check WHEEL=/path/onnxruntime_gpu-....whl

Needs no network. The machine's own Python (with numpy, onnx, sympy; tokenizers, typer, rich
from `--wheels DIR` if missing) gets a venv in .cache/gpu-check/venv that sees the system's
packages, and the onnxruntime-gpu wheel is installed there with --no-deps (it shadows a CPU
onnxruntime of the system, which stays untouched). A wheel brought in parts (`split -b 60m
X.whl X.whl.part-`) is reassembled first. Without a wheel it says how to bring one.

In at most ~5 minutes (--budget 270 s, plus the wheel install) it then:
1. prints the GPU, driver, the CUDA version the driver runs, compute capability, the ORT build
   (and the CUDA it was built for), its providers and what preload_dlls() could not load;
2. runs `infer.py` token_cls and seq_cls with `--device cuda --use_fp16` on the bundled models
   and asserts "Use GPU" / "Use FP16" and no fallback notice;
3. checks fp16 (fused) and TensorRT fp16 against fp32 with TF32 off (max abs diff, argmax
   agreement on real-text probes) for ner-zh, sentiment-zh and an ERNIE-3.0-medium-shaped graph;
4. times fp32, fp16 (fused) and TensorRT fp16, plain run vs IO binding, at batch 1/8/32 ×
   length 32/128/512 on the ERNIE-3.0-medium-shaped graph (random weights);
5. writes the `gpu_check` section of benchmarks/RESULTS.md and exits 1 if any check failed.
TensorRT engines are cached in .cache/gpu-check/cache/trt: a TensorRT build that did not fit
the budget (reported as skipped) fits on a second run. A machine without TensorRT's libraries
reports TensorRT as skipped, not failed.
`--allow-cpu` runs the same code on the CPU provider at a tiny shape (to test this script).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".cache" / "gpu-check"
VENV = WORK / "venv"
MARKER = "ERNIE_DEPLOY_GPU_CHECK_VENV"
NEEDED = ("numpy", "onnx", "sympy", "tokenizers", "packaging", "flatbuffers", "google.protobuf")
BRING = """No onnxruntime-gpu wheel was given (--wheel) and this Python has no CUDA build of ONNX Runtime.
Bring one from a machine with network (this machine needs none):
  pip download onnxruntime-gpu==1.31.1 --no-deps --only-binary :all: \\
      --python-version {py} --platform manylinux_2_28_x86_64 -d wheels/
  (CUDA 13 build, NVIDIA driver >= 580; for a CUDA 12 driver (525-570) take onnxruntime-gpu==1.26.0)
  Files must be under 60 MB? split -b 60m wheels/W.whl wheels/W.whl.part-  (W: the wheel's full name)
  Missing packages ({missing}): pip download {missing} --only-binary :all: \\
      --python-version {py} --platform manylinux_2_28_x86_64 -d wheels/  (deps included); pass --wheels wheels/
Then: python3 benchmarks/gpu_check.py --wheel wheels/onnxruntime_gpu-....whl [--wheels wheels/]"""


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--wheel",
        default="",
        help="the onnxruntime-gpu wheel (or the name its .part-* files share)",
    )
    p.add_argument(
        "--wheels", default="", help="a folder of further wheels for missing dependencies"
    )
    p.add_argument(
        "--budget", type=float, default=270.0, help="seconds for the checks (default 270)"
    )
    p.add_argument(
        "--out", default=str(REPO / "benchmarks" / "RESULTS.md"), help="RESULTS.md to write"
    )
    p.add_argument("--no-trt", action="store_true", help="skip TensorRT")
    p.add_argument(
        "--allow-cpu", action="store_true", help="run on the CPU provider (tests this script)"
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# bootstrap: the wheel into a venv beside the system's packages, then run again inside it
# ---------------------------------------------------------------------------------------------


def _missing(python: str) -> list[str]:
    """The NEEDED modules `python` cannot import (a missing parent package counts as missing)."""
    code = (
        "import importlib.util as u\n"
        f"for m in {NEEDED!r}:\n"
        "    try:\n"
        "        found = u.find_spec(m) is not None\n"
        "    except ImportError:\n"
        "        found = False\n"
        "    if not found:\n"
        "        print(m)\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def _has_cuda_ort(python: str) -> bool:
    code = "import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "True"


def _wheel(spec: str) -> Path | None:
    if not spec:
        return None
    path = Path(spec).expanduser().resolve()
    if path.is_file():
        return path
    parts = sorted(path.parent.glob(path.name + ".part-*"))
    if not parts:
        sys.exit(f"gpu_check: {path} does not exist and no {path.name}.part-* files sit beside it.")
    WORK.mkdir(parents=True, exist_ok=True)
    whole = WORK / path.name
    with whole.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    print(
        f"reassembled {whole.name} from {len(parts)} parts ({whole.stat().st_size / 2**20:.0f} MB)"
    )
    return whole


def _see_parent_venv(python: str) -> None:
    """When this Python is itself a venv, a venv made from it with system_site_packages sees the
    base interpreter's packages, not this venv's (numpy, onnx, ... on many GPU images): a .pth
    file in the new venv adds this one's site-packages after its own (its onnxruntime-gpu first)."""
    if sys.prefix == sys.base_prefix:
        return
    import site

    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    parent = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "zz_parent_venv.pth").write_text("\n".join(parent) + "\n")


def bootstrap(args: argparse.Namespace, argv: list[str]) -> int:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheel = _wheel(args.wheel)
    python = sys.executable
    if wheel is not None:
        python = str(VENV / "bin" / "python")
        pip = [python, "-m", "pip"]
        if not (VENV / "pip-ok").exists() and not (VENV / "no-pip").exists():
            try:
                venv.EnvBuilder(system_site_packages=True, with_pip=True).create(VENV)
                (VENV / "pip-ok").touch()
            except (subprocess.CalledProcessError, OSError):  # no ensurepip (Debian w/o venv)
                venv.EnvBuilder(system_site_packages=True, with_pip=False, clear=True).create(VENV)
                (VENV / "no-pip").touch()
        _see_parent_venv(python)
        if (VENV / "no-pip").exists():  # the system pip installs into the venv (pip >= 22.3)
            pip = [sys.executable, "-m", "pip", "--python", python]
        pip += ["install", "-q", "--no-index", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
        missing = _missing(python)
        if missing and args.wheels:
            names = [m.replace("google.protobuf", "protobuf") for m in missing]
            subprocess.run([*pip, "--find-links", args.wheels, *names], check=True)
    elif not (args.allow_cpu or _has_cuda_ort(python)):
        print(
            BRING.format(
                py=py.replace(".", ""),
                missing=" ".join(_missing(python)).replace("google.", "") or "none",
            )
        )
        return 2
    missing = _missing(python)
    if missing:
        print(
            BRING.format(py=py.replace(".", ""), missing=" ".join(missing).replace("google.", ""))
        )
        return 2
    env = {
        **os.environ,
        MARKER: "1",
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'benchmarks'}",
    }
    return subprocess.run([python, str(Path(__file__).resolve()), *argv], env=env).returncode


# ---------------------------------------------------------------------------------------------
# the checks (inside the venv)
# ---------------------------------------------------------------------------------------------


def environment(allow_cpu: bool) -> tuple[list[str], list[str]]:
    """Lines describing the GPU stack, and failures."""
    from ernie_deploy.runtime import device, gpu

    lines, failures = [], []
    query = "name,driver_version,compute_cap,memory.total"
    smi = (
        subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        if _which("nvidia-smi")
        else None
    )
    lines.append(
        f"nvidia-smi: {smi.stdout.strip() if smi and smi.returncode == 0 else 'not available'}"
    )
    lines.append(f"CUDA_VISIBLE_DEVICES: {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    driver = gpu.driver_cuda_version()
    lines.append(f"driver runs CUDA up to: {_dotted(driver) or 'no libcuda.so.1'}")
    cc = device.compute_capability(0)
    lines.append(f"compute capability (cuda:0): {_dotted(cc) or 'unknown'}")
    package, version, cuda = gpu.ort_build()
    lines.append(f"ONNX Runtime: {package} {version}, built for CUDA {cuda or '-'}")
    notes = gpu.preload_cuda_libraries()
    lines.append(f"preload_dlls(): {'; '.join(notes) if notes else 'all loaded'}")
    providers = device.available_providers()
    lines.append(f"providers: {', '.join(providers)}")
    if not allow_cpu:
        if gpu.CUDA not in providers:
            failures.append("CUDAExecutionProvider is not available")
        if cc is None or cc < (7, 0):
            failures.append(f"compute capability {cc} is below 7.0: fp16 stays off")
        if driver and cuda and driver[0] < cuda:
            failures.append(
                f"the driver runs CUDA {driver[0]} but ORT needs {cuda}: {gpu.extra_for_driver(driver)}"
            )
    return lines, failures


def _dotted(version: tuple[int, int] | None) -> str:
    return f"{version[0]}.{version[1]}" if version else ""


def _which(name: str) -> bool:
    return any((Path(d) / name).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def infer_runs(allow_cpu: bool, deadline: float) -> tuple[list[str], list[str]]:
    """infer.py token_cls / seq_cls --device cuda --use_fp16: "Use GPU", "Use FP16", no fallback."""
    lines, failures = [], []
    for task in ("token_cls", "seq_cls"):
        cmd = [sys.executable, str(REPO / "infer.py"), "--task_name", task, "--use_fp16",
               "--device", "cpu" if allow_cpu else "cuda"]  # fmt: skip
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=max(30, deadline - time.time())
            )
        except subprocess.TimeoutExpired:
            failures.append(f"infer.py {task} timed out")
            continue
        out = done.stdout + done.stderr
        notices = [ln.strip() for ln in done.stdout.splitlines() if "fp16" in ln or "placed" in ln]
        lines.append(f"infer.py {task}: exit {done.returncode}; " + " | ".join(notices)[:600])
        expected = ("Use CPU",) if allow_cpu else ("Use GPU to inference", "Use FP16 to inference")
        wrong = [w for w in expected if w not in out]
        fallback = [w for w in ("placed the model", "running fp32", "FallbackWarning") if w in out]
        if done.returncode != 0 or wrong or (fallback and not allow_cpu):
            failures.append(
                f"infer.py {task}: exit {done.returncode}, missing {wrong}, fallback {fallback}"
            )
            lines.append(out[-1500:])
    return lines, failures


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.environ.get(MARKER) != "1":
        return bootstrap(args, argv)
    import _common
    import _gpu_bench

    from ernie_deploy.runtime import gpu

    start = time.time()
    deadline = start + args.budget
    failures: list[str] = []
    env_lines, bad = environment(args.allow_cpu)
    failures += bad
    for line in env_lines:
        print(line, flush=True)
    infer_lines, bad = infer_runs(args.allow_cpu, min(deadline, time.time() + 120))
    failures += bad
    for line in infer_lines:
        print(line, flush=True)
    bench = _gpu_bench.run(
        allow_cpu=args.allow_cpu, trt=not args.no_trt, deadline=deadline, work=WORK
    )
    failures += bench.failures
    elapsed = time.time() - start
    verdict = "PASSED" if not failures else "FAILED: " + "; ".join(failures)
    flat = [re.sub(r"\s+", " ", line)[:800] for line in infer_lines]
    body = "\n".join(
        [
            "## GPU check (`make gpu-check WHEEL=...`, benchmarks/gpu_check.py)",
            "",
            *[f"- {line}" for line in env_lines],
            *[f"- {line}" for line in flat],
            "",
            *bench.lines,
            "",
            f"Verdict: **{verdict}** ({elapsed:.0f} s).",
        ]
    )
    package, version, cuda = gpu.ort_build()
    machine = _common.machine_line([f"ORT build {package} {version} (CUDA {cuda or '-'})"])
    _common.write_section("gpu_check", body + f"\n\nMachine: {machine}", machine, Path(args.out))
    print("\n".join(bench.lines))
    print(f"\nGPU CHECK {verdict} in {elapsed:.0f} s; section gpu_check written to {args.out}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
