"""Finding the system tools some tests drive (installed by `make system-deps`), and running the
project's own commands the way `make` does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def need_tool(tool: str) -> str:
    """The tool's path, or a failure that says how to install it (never a silent skip)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `make system-deps` installs it")
    return path


def run_in_project(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a command from the repository root with the project importable (PYTHONPATH), output
    captured as text; the caller checks the exit status."""
    return subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
