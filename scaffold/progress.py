"""Progress for long steps: a spinner on the console when there is one, nothing otherwise."""

from __future__ import annotations

import contextlib
from typing import Any


def status(progress: Any, message: str) -> contextlib.AbstractContextManager[Any]:
    """``progress.status(message)`` for a rich Console, a no-op for None (library use)."""
    return progress.status(message) if progress is not None else contextlib.nullcontext()
