"""How results look in a terminal: rich tables for a spec, a check ladder and an update."""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaffold.spec import BackboneSpec
from scaffold.write.names import FILE_STORE_ENV

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def spec_table(spec: BackboneSpec) -> Table:
    from rich.table import Table
    from rich.text import Text

    selected = set(spec.out_indices)
    title = (
        f"{spec.qualname} ({spec.kind}, {spec.num_params / 1e6:.1f}M params) "
        f"input {tuple(spec.input_shape)} traced on {spec.traced_on}"
    )
    if spec.temporal and spec.input_layout != "BCTHW":
        title += f", fed to the model as {spec.input_layout}"
    table = Table(title=Text(title), title_justify="left")
    columns = ["#", "module", "channels", "reduction", "layout", "shape", "selected"]
    if any(f.why for f in spec.features):
        columns.append("why")
    for col in columns:
        table.add_column(col, justify="right" if col in ("#", "channels", "reduction") else "left")
    for i, f in enumerate(spec.features):
        module = f.module if f.call == 0 else f"{f.module} (call {f.call})"
        if f.call == -1:
            module = f"{f.module} (last call)"  # once per frame: its last call at any frames
        if f.source == "hook" and f.key is not None:
            module += f"[{f.key!r}]"  # an item of what the module returns
        if f.source == "input":
            module = f"input of {module}"  # what enters the module
        extra = f" +{f.prefix_tokens} prefix" if f.prefix_tokens else ""
        extra += f" +{f.suffix_tokens} suffix" if f.suffix_tokens else ""
        extra += f" {f.groups} groups" if f.groups > 1 else ""
        cells: list[str | Text] = [
            str(i),
            Text(module),
            str(f.num_chs),
            str(f.reduction),
            f.layout + extra,
            "x".join(map(str, f.shape[1:])) if f.shape else "",
            "yes" if i in selected else "",
        ]
        if len(columns) > len(cells):
            cells.append(Text(f.why))  # plain text: module names may hold brackets
        table.add_row(*cells)
    caption = [f"out_indices {list(spec.out_indices)}"]
    caption += list(spec.notes)
    if spec.head_modules:
        caption.append(skipped_line(spec))
    if spec.frozen:
        more = f" and {len(spec.frozen) - 8} more" if len(spec.frozen) > 8 else ""
        caption.append("frozen (no gradient from the input): " + ", ".join(spec.frozen[:8]) + more)
    caption += [f"unsure: {d}" for d in spec.doubts]
    table.caption = Text("; ".join(caption))
    table.caption_justify = "left"
    return table


def skipped_line(spec: BackboneSpec) -> str:
    """What the backbone's forward never runs: the modules after its last feature."""
    return "the backbone's forward stops after its last feature; never run: " + ", ".join(
        spec.head_modules
    )


# A path at the end of a check's detail: "... (log: /path/to/iterate.log)".
_LOG = re.compile(r"\s*\(log: (?P<path>.+)\)$")


def checks_table(report) -> Table:
    """The ladder as a table; log paths are left out of it (a narrow column would cut them),
    `print_checks` prints them whole below."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="verification", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for c in report.checks:
        mark = Text("ok", "green") if c.ok else Text("FAILED", "red")
        detail = _LOG.sub(" (log below)", c.detail)
        table.add_row(c.name, mark, f"{c.seconds:.1f}", Text(detail))  # details: plain text
    return table


def print_checks(console: Console, report) -> None:
    """The ladder's table, then each log path a check names, whole and shell-quoted."""
    console.print(checks_table(report))
    for c in report.checks:
        found = _LOG.search(c.detail)
        if found:
            plain(console, f"log of {c.name}: {shlex.quote(found['path'])}")


def plain(console: Console, line: str) -> None:
    """A line a person may copy (a command, a path): never wrapped, whatever the width, and
    without markup or highlighting."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def show_result(out: Console, err: Console, result, report) -> None:
    """What new-backbone and update did, the ladder's table, and how to run the benchmark."""
    from rich.text import Text

    changes = getattr(result, "changes", None)
    if changes is None:  # new-backbone
        err.print(Text.assemble(("generated ", "green"), _quote(result.out)), soft_wrap=True)
        for f in result.files:
            plain(err, f"  {_quote(f)}")
    else:
        show_changes(err, result)
    if report is not None:
        print_checks(out, report)
    if getattr(result, "conflicts", None):
        return  # show_changes said what to resolve
    doubts = [c for c in report.checks if c.name == "doubts" and not c.ok] if report else []
    if doubts and all(c.ok for c in report.checks if c.name != "doubts"):
        err.print(
            Text.assemble(("generated, not verified", "yellow"), f": {doubts[0].detail}"),
            soft_wrap=True,
        )
        return
    if report is not None and not report.ok:
        failed = ", ".join(c.name for c in report.checks if not c.ok)
        err.print(
            Text.assemble(
                ("verification failed", "red"),
                f" ({failed}): fix what the table says, then run "
                f"`{shlex.join(['scaffold', 'verify', str(result.out)])}`",
            ),
            soft_wrap=True,
        )
        return
    plain(err, f"backbone {result.backbone}; run the benchmark with:")
    plain(err, "  " + run_line(result.out, result.benchmark_config))
    for b in result.to_dict().get("baselines", []):
        weights = "" if b.get("backbone_pretrained", True) else " (not pretrained: see its file)"
        plain(err, "  " + run_line(result.out, b["config"]) + weights)
    ray_config = result.out / "benchmark_ray.yaml"
    if ray_config.is_file():
        plain(
            err,
            f"on a Ray cluster (pip install {_quote(result.out)} on every node; 8 CPUs + 1 GPU per trial):",
        )
        plain(
            err,
            "  "
            + run_line(
                result.out,
                ray_config,
                ["python", "-m", "terratorch_iterate.benchmark_ray", "--config"],
            ),
        )
    show_iterate2(err, result.out)


def show_iterate2(err: Console, out) -> None:
    """How to run the tasks with iterate2 (with ``iterate2/``): here, through Slurm and LSF."""
    from scaffold.render.iterate2 import shell_lines

    if not shell_lines(out):
        return
    for wlm, title in (
        (None, "with terratorch-iterate's iterate (iterate2), on this machine:"),
        ("slurm", "with iterate, each trial on a Slurm node (run it where srun works):"),
        ("lsf", "with iterate, each trial on an LSF node (run it where bsub works):"),
    ):
        plain(err, title)
        for line in shell_lines(out, wlm):
            plain(err, f"  {line}")


def _quote(path) -> str:
    return shlex.quote(str(path))


ITERATE = ("terratorch", "iterate", "--hpo", "--config")


def run_line(out, config, program: tuple[str, ...] | list[str] = ITERATE) -> str:
    """The shell line that runs the benchmark YAML `config` of the folder `out`: from the
    folder (the YAML's paths are relative to it, and the tools read them against the working
    directory), with MLflow's file store allowed (MLflow 3 refuses it otherwise)."""
    rel = Path(config).relative_to(out) if Path(config).is_relative_to(out) else Path(config)
    env = "=".join(FILE_STORE_ENV)
    return f"cd {shlex.quote(str(out))} && {env} {shlex.join([*program, str(rel)])}"


def show_changes(err: Console, result) -> None:
    """An update's changes, the files of the person's kept in data/, and the conflicts."""
    from rich.text import Text

    if result.unresolved:
        for path in result.unresolved:
            err.print(
                Text.assemble(
                    ("unresolved conflict", "red"),
                    f" in {_quote(path)}: resolve its <<<<<<< ======= >>>>>>> markers first",
                ),
                soft_wrap=True,
            )
        err.print("update stopped: nothing was changed")
        return
    show_analysis_changes(err, result)
    for path, what in result.changes:
        plain(err, f"  {what:12} {_quote(path)}")
    if not result.changes:
        err.print("no file changed" if result.analysis else "nothing changed")
    for kept in getattr(result, "kept_aside", ()):
        plain(err, f"  kept aside   {kept.line()}")
    if result.data_kept:
        kept = ", ".join(result.data_kept[:5]) + (" ..." if len(result.data_kept) > 5 else "")
        plain(err, f"  kept         your files in data/: {kept}")
    for path in result.conflicts:
        err.print(
            Text.assemble(
                ("conflict", "red"),
                f" in {_quote(path)}: resolve the <<<<<<< ======= >>>>>>> markers",
            ),
            soft_wrap=True,
        )


def show_analysis_changes(err: Console, result) -> None:
    """How the re-analysis of the model differs from the recorded one."""
    if result.analysis:
        plain(err, "the model's analysis changed:")
        for line in result.analysis:
            plain(err, f"  {line}")


def show_dry_run(err: Console, result) -> None:
    """The end of `update --dry-run`: what the real run would do, in a few lines."""
    if result.unresolved:
        show_changes(err, result)
        return
    counts: dict[str, int] = {}
    for plan in result.plans:
        if plan.action != "unchanged":
            counts[plan.action] = counts.get(plan.action, 0) + 1
    files = ", ".join(f"{n} {what}" for what, n in counts.items()) or "no file would change"
    data = "the smoke files would be rewritten" if result.data_rewritten else "unchanged"
    if result.data_kept:
        data += f" ({len(result.data_kept)} other files there kept)"
    conflicts = ", ".join(result.conflicts) or "none"
    summary = (
        f"dry run, nothing written:\n  files: {files}\n  data/: {data}\n  conflicts: {conflicts}"
    )
    show_analysis_changes(err, result)
    err.print(summary, markup=False, highlight=False, soft_wrap=True)


def results_table(results) -> Table:
    """`scaffold report`: tasks as rows, backbones as columns, the best per row marked with *."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"benchmark results in {results.directory}", title_justify="left")
    table.add_column("task")
    table.add_column("metric")
    for b in results.backbones:
        table.add_column(Text(b.name + ("" if b.baseline else " (yours)")), justify="right")
    for row in results.tasks:
        best = set(row.best)
        cells = []
        for b in results.backbones:
            cell = row.cells.get(b.name)
            if cell is None:
                cells.append(Text("missing", "dim"))
                continue
            text = f"{cell.mean:.4g}"
            if cell.std is not None:
                text += f" ± {cell.std:.2g} (n={len(cell.values)})"
            if b.name in best:
                cells.append(Text(f"* {text}", "bold green"))
            else:
                cells.append(Text(text))
        arrow = "↓" if row.direction == "min" else "↑"
        table.add_row(Text(row.name), Text(f"{row.metric} {arrow}"), *cells)
    for track in dict.fromkeys(a.track for a in results.aggregates):
        found = {a.backbone: a for a in results.aggregates if a.track == track}
        cells = [
            Text(f"{a.iqm:.3f} [{a.low:.3f}, {a.high:.3f}]")
            if (a := found.get(b.name))
            else Text("missing", "dim")
            for b in results.backbones
        ]
        table.add_row(Text(f"all tasks ({track})"), Text("normalised IQM [95% CI] ↑"), *cells)
    table.caption = Text("* best per task; ± std over seeds (repeated runs)")
    table.caption_justify = "left"
    return table


def status(progress: Any, message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner for a long step: ``progress.status(message)`` for a rich Console, a no-op for
    None (library use)."""
    return progress.status(message) if progress is not None else contextlib.nullcontext()
