"""The ``fit configs`` check: each ``fit/<task>.yaml`` is what ``terratorch fit --config`` takes.

TerraTorch's own CLI (``terratorch.cli_tools.build_lightning_cli``, a LightningCLI) parses the
file and builds what it names (the trainer, the task with its model, the datamodule) without
training: a key the parser rejects, a class it cannot import, or a model the factory cannot build
is a finding that names the file.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator

from scaffold.errors import one_line
from scaffold.verify.types import CheckFailed
from scaffold.write.names import FIT_DIR


def fit_files(state) -> list[str]:
    return sorted(rel for rel in state.files if rel.startswith(f"{FIT_DIR}/"))


def check_fit(context) -> str:
    from terratorch.cli_tools import build_lightning_cli

    files = fit_files(context.state)
    for rel in files:
        path = context.directory / rel
        if not path.is_file():
            raise CheckFailed(f"{path} is missing (deleted?)")
        errors = io.StringIO()
        try:
            # LightningCLI prints (the seed, a parser's usage); --json keeps stdout for itself.
            with (
                contextlib.redirect_stdout(sys.stderr),
                contextlib.redirect_stderr(errors),
                _argv_of_its_own(),
            ):
                build_lightning_cli(args=["--config", str(path)], run=False)
        except SystemExit as exc:  # the parser's own exit, its message on stderr
            lines = [line for line in errors.getvalue().splitlines() if line.strip()]
            message = lines[-1].strip() if lines else f"exit {exc.code}"
            raise CheckFailed(f"terratorch fit rejects {path}: {message}") from exc
        except Exception as exc:
            raise CheckFailed(f"terratorch fit cannot build {path}: {one_line(exc)}") from exc
    return f"terratorch fit parses and builds {', '.join(files)}"


@contextlib.contextmanager
def _argv_of_its_own() -> Iterator[None]:
    """LightningCLI given `args` warns when ``sys.argv`` holds arguments too (scaffold's own):
    it parses as ``terratorch fit --config FILE`` would, with nothing else on the line."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
