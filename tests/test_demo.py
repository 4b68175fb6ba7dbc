"""`make demo` runs tools/demo.py: it must keep working on the bundled defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_every_step_on_the_bundled_defaults() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert (
        "# the bundled default, ner-zh-e5" in out
        and "# the bundled default, sentiment-zh-e5" in out
    )
    assert out.count("entity: ") == 7
    assert "420 of the 420 expected entities found" in out
    assert "How do I cook rice?  ->  Rinse the rice" in out
    assert '"text": "Michael Jordan", "label": "PER", "start": 20, "end": 34' in out  # the server
    assert "Traceback" not in run.stderr
