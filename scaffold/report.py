"""How results look in a terminal: rich tables for a spec, a check ladder and an update."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from scaffold.spec import BackboneSpec


def spec_table(spec: BackboneSpec) -> Table:
    selected = set(spec.out_indices)
    title = (
        f"{spec.qualname} ({spec.kind}, {spec.num_params / 1e6:.1f}M params) "
        f"input {tuple(spec.input_shape)} traced on {spec.traced_on}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("#", "module", "channels", "reduction", "layout", "shape", "selected"):
        table.add_column(col, justify="right" if col in ("#", "channels", "reduction") else "left")
    for i, f in enumerate(spec.features):
        module = f.module if f.call == 0 else f"{f.module} (call {f.call})"
        extra = f" +{f.prefix_tokens} prefix" if f.prefix_tokens else ""
        table.add_row(
            str(i),
            module,
            str(f.num_chs),
            str(f.reduction),
            f.layout + extra,
            "x".join(map(str, f.shape[1:])) if f.shape else "",
            "yes" if i in selected else "",
        )
    caption = [f"out_indices {list(spec.out_indices)}"]
    caption += list(spec.notes)
    table.caption = "; ".join(caption)
    table.caption_justify = "left"
    return table


def checks_table(report) -> Table:
    table = Table(title="verification", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for c in report.checks:
        mark = "[green]ok[/]" if c.ok else "[red]FAILED[/]"
        table.add_row(c.name, mark, f"{c.seconds:.1f}", c.detail)
    return table


def show_update(out: Console, err: Console, result, report) -> None:
    for path, what in result.changes:
        err.print(f"  {what:10} {path}")
    if not result.changes:
        err.print("nothing changed")
    for path in result.conflicts:
        err.print(f"[red]conflict[/] in {path}: resolve the <<<<<<< ======= >>>>>>> markers")
    if report is not None:
        out.print(checks_table(report))
