"""A Python of its own for third-party clients whose package names clash with ours."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path


def isolated_python(directory: Path, *requirements: str) -> Path:
    """Create a virtual environment in ``directory`` with ``requirements``; return its python."""
    venv.create(directory, with_pip=True)
    python = directory / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", *requirements], check=True, timeout=900)
    return python


def run_isolated(python: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` with ``-I`` from the environment's own folder, so our ``tiled`` is hidden."""
    return subprocess.run(
        [python, "-I", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=python.parent,
    )
