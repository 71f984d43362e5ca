"""The repository is clean under its own checks: ruff (lint and format) over everything, and mypy
over scaffold/ (both configured in pyproject.toml). Each fails with the tool's own report."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing_and_the_format_is_kept():
    for cmd in (["check"], ["format", "--check"]):
        done = _run("ruff", *cmd, "--no-cache", ".")
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_no_type_error_in_scaffold():
    # files, strictness and the cache (.mypy_cache, ignored by git) come from pyproject.toml
    done = _run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout
