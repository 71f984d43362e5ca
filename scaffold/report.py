"""How results look in a terminal: rich tables for a spec, a check ladder and an update."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scaffold.spec import BackboneSpec


def spec_table(spec: BackboneSpec) -> Table:
    selected = set(spec.out_indices)
    title = (
        f"{spec.qualname} ({spec.kind}, {spec.num_params / 1e6:.1f}M params) "
        f"input {tuple(spec.input_shape)} traced on {spec.traced_on}"
    )
    table = Table(title=Text(title), title_justify="left")
    columns = ["#", "module", "channels", "reduction", "layout", "shape", "selected"]
    if any(f.why for f in spec.features):
        columns.append("why")
    for col in columns:
        table.add_column(col, justify="right" if col in ("#", "channels", "reduction") else "left")
    for i, f in enumerate(spec.features):
        module = f.module if f.call == 0 else f"{f.module} (call {f.call})"
        extra = f" +{f.prefix_tokens} prefix" if f.prefix_tokens else ""
        cells = [
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
    table.caption = Text("; ".join(caption))
    table.caption_justify = "left"
    return table


def checks_table(report) -> Table:
    table = Table(title="verification", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for c in report.checks:
        mark = Text("ok", "green") if c.ok else Text("FAILED", "red")
        table.add_row(c.name, mark, f"{c.seconds:.1f}", Text(c.detail))  # details: plain text
    return table


def show_result(out: Console, err: Console, result, report) -> None:
    """What new-backbone and update did, the ladder's table, and how to run the benchmark."""
    changes = getattr(result, "changes", None)
    if changes is None:  # new-backbone
        err.print(Text.assemble(("generated ", "green"), str(result.out)))
        for f in result.files:
            err.print(f"  {f}", markup=False, highlight=False)
    else:
        for path, what in changes:
            err.print(f"  {what:12} {path}", markup=False, highlight=False)
        if not changes:
            err.print("nothing changed")
        for path in result.conflicts:
            err.print(
                Text.assemble(
                    ("conflict", "red"), f" in {path}: resolve the <<<<<<< ======= >>>>>>> markers"
                )
            )
    if report is not None:
        out.print(checks_table(report))
    if not getattr(result, "conflicts", None):
        err.print(
            f"backbone {result.backbone}; run the benchmark with:\n"
            f"  terratorch iterate --hpo --config {result.benchmark_config}",
            markup=False,
            highlight=False,
        )
