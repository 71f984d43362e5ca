"""Shared helpers: paths, running the real `scaffold` command, generating backbones once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parent / "models"
SWIN3D = ROOT / "examples" / "swin3d" / "swin3d.py"
BIN = Path(sys.executable).parent
SCAFFOLD = str(BIN / "scaffold")


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: nothing of MLflow's set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop("PYTHONPATH", None)
    return env


def run_fresh(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` in a fresh process with a fresh shell's environment; capture its output."""
    return subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600
    )


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `scaffold ARGS` as a person would, in a fresh process."""
    return run_fresh([SCAFFOLD, *args], cwd=cwd)


def run_json(*args: str, cwd: Path | None = None) -> tuple[int, dict]:
    done = run_cli(*args, "--json", cwd=cwd)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def copy_model(name: str, dest: Path, new_name: str | None = None) -> Path:
    """A copy of tests/models/NAME.py under `dest` (edits then stay out of the repository)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{new_name or name}.py"
    shutil.copyfile(MODELS / f"{name}.py", target)
    return target


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """Backbones generated (not verified) in-process once per session: layout -> output dir."""
    from scaffold.pipeline.new_backbone import Options, generate

    root = tmp_path_factory.mktemp("generated")
    targets = {
        "cnn": str(MODELS / "cnn.py"),
        "vit": str(MODELS / "vit.py"),
        "channels_last": str(MODELS / "channels_last.py"),
        "temporal": str(MODELS / "temporal.py"),
        "dict_out": str(MODELS / "dict_out.py"),
        "list_out": str(MODELS / "list_out.py"),
        "tokens": str(MODELS / "tokens.py"),
        "swin3d": str(SWIN3D),
    }
    return {
        layout: generate(Options(target=target, args={}, out=root / layout))
        for layout, target in targets.items()
    }
