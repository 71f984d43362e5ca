"""The ladder's types: a check's finding (CheckFailed), its result (Check), the report of a run.

Every check module imports these and nothing of the ladder that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaffold.errors import one_line


class CheckFailed(Exception):
    """A check's finding: what is wrong, said so that a person can act on it."""


def read_config(config_path: Path) -> dict[str, Any]:
    """A benchmark YAML as a mapping; a missing, unreadable or malformed file is a finding."""
    import yaml

    if not config_path.is_file():
        raise CheckFailed(f"{config_path} is missing")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckFailed(f"{config_path}: {one_line(exc)}") from exc
    if not isinstance(config, dict):
        raise CheckFailed(f"{config_path}: not a YAML mapping")
    return config


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "seconds": self.seconds}


@dataclass
class VerifyReport:
    directory: Path
    checks: list[Check] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)
