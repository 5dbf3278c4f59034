"""Finding the system tools some tests drive (installed by `make system-deps`)."""

from __future__ import annotations

import shutil

import pytest


def need_tool(tool: str) -> str:
    """The tool's path, or a failure that says how to install it (never a silent skip)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `make system-deps` installs it")
    return path
