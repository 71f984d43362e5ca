"""Interrupts: Ctrl-C, SIGTERM and kill -9 at the worst moments. Whatever stops scaffold, the
line it prints says where things stand, no process it started outlives it, and the next run
finds the folder whole: an update killed half way is rolled back, never merged as a hand edit."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import MODELS, run_cli


def ctrl_c(*args, **kwargs):
    """A stage that Ctrl-C stops as soon as it starts (a real SIGINT to this process)."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the interrupt arrives before this ends
    raise AssertionError("SIGINT did not interrupt")


# -- 3. the line says where things stand ---------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "stage", "said"),
    [
        (["inspect", str(MODELS / "cnn.py")], "scaffold.pipeline.analyse", "nothing was written"),
        (
            ["new-backbone", str(MODELS / "cnn.py"), "--no-verify"],
            "scaffold.pipeline.new_backbone.generate",
            "nothing was written",
        ),
        (["update", "{out}", "--no-verify"], "scaffold.pipeline.update.update_dir", "nothing was"),
        (["verify", "{out}"], "scaffold.verify.ladder.verify_dir", "verification stopped"),
        (["report", "{out}"], "scaffold.results.collect.collect", "nothing was written"),
    ],
)
def test_ctrl_c_in_every_command_says_where_things_stand(
    monkeypatch, tmp_path, command, stage, said
):
    module, _, name = stage.rpartition(".")
    monkeypatch.setattr(f"{module}.{name}", ctrl_c)
    args = [a.replace("{out}", str(tmp_path)) for a in command]  # the stage never reads it
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 130, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {said}"), done.stderr
    assert "Aborted" not in done.stderr and "Traceback" not in done.stderr
