"""The commands as one chain: resolve -> analyse -> plan -> render -> write -> verify.

`analyse` is the first two links, what `inspect` prints; `new_backbone.generate` and
`update.update_dir` go on from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scaffold.analyse import analyse_model
from scaffold.console import status
from scaffold.data.geobench import PlannedTask
from scaffold.data.geobench2 import Planned2
from scaffold.data.spec import DatasetSpec
from scaffold.pipeline.geobench2 import input_modalities
from scaffold.spec import BackboneSpec
from scaffold.write.state import Options

if TYPE_CHECKING:
    from scaffold.render.backbone import RenderOptions


def analyse(
    target: str,
    args: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    forward_args: dict[str, Any] | None = None,
    image_arg: str | None = None,
    taps: tuple[str, ...] | None = None,
    modalities: tuple[tuple[str, int], ...] = (),
) -> BackboneSpec:
    """resolve -> analyse: import what TARGET names, build it with `args`, trace it and describe
    its features (see `scaffold.analyse.analyse_model` for the options)."""
    from scaffold.resolve.target import resolve_target, source_class

    resolved = resolve_target(target)
    return analyse_model(
        resolved,
        source_class(resolved),
        args,
        input_shape,
        forward_args,
        image_arg,
        taps,
        modalities,
    )


def analysed(
    target: str, options: Options, datasets: tuple[DatasetSpec, ...], progress
) -> BackboneSpec:
    """The analysis both commands run: the spec of `target` with the options' arguments, checked
    against the task and against each dataset's bands and frames (`options.bands`: the model's
    bands by TerraTorch's names, as `pipeline.bands.surveyed_bands` read them)."""
    from scaffold.render.backbone import check_task
    from scaffold.render.tasks import input_layout

    modalities = input_modalities(options.bands, options.band_modalities)
    with status(progress, f"analysing {options.target}"):
        spec = analyse(
            target,
            options.args,
            options.input_shape,
            options.forward_args,
            options.image_arg,
            options.taps or None,
            modalities,
        )
    check_task(spec, options.task)
    for ds in datasets:
        input_layout(ds, spec, options.bands)
    return spec


def render_options(
    options: Options,
    datasets: tuple[DatasetSpec, ...],
    geobench: tuple[PlannedTask, ...] = (),
    geobench2: tuple[Planned2, ...] = (),
) -> RenderOptions:
    """What rendering needs of the recorded options (name, output folder, target, bands, ...),
    the surveyed datasets and the planned GEO-Bench tasks."""
    from scaffold.render.backbone import RenderOptions

    assert options.out is not None
    return RenderOptions(
        name=options.name or "",
        out=options.out,
        task=options.task,
        target=options.target,
        weights=options.weights,
        datasets=datasets,
        ray=options.ray,
        iterate2=options.iterate2,
        baselines=options.baselines,
        geobench=geobench,
        bands=options.bands,
        protocol=options.protocol,
        seeds=options.seeds,
        geobench2=geobench2,
    )
