"""The commands as one chain: resolve -> analyse -> plan -> render -> write -> verify.

`analyse` is the first two links, what `inspect` prints; `new_backbone.generate` and
`update.update_dir` go on from there.
"""

from __future__ import annotations

from typing import Any

from scaffold.analyse import analyse_model
from scaffold.spec import BackboneSpec


def analyse(
    target: str,
    args: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    forward_args: dict[str, Any] | None = None,
    image_arg: str | None = None,
) -> BackboneSpec:
    """resolve -> analyse: import what TARGET names, build it with `args`, trace it and describe
    its features (see `scaffold.analyse.analyse_model` for the options)."""
    from scaffold.resolve.target import resolve_target, source_class

    resolved = resolve_target(target)
    return analyse_model(
        resolved, source_class(resolved), args, input_shape, forward_args, image_arg
    )
