"""Bands by name: TerraTorch's band names, their Sentinel-2 aliases, and their wavelengths.

A model's input bands (``--bands``) and a dataset's bands are matched by these names, never by
position: a task takes the model's bands that its dataset has, in the model's order.

The names are TerraTorch's (``terratorch.datasets.utils.HLSBands`` and the ``all_band_names``
of its GEO-Bench datasets). Sentinel-2 band ids (``B02``, ``B8A``) are accepted as aliases of
the names TerraTorch gives those bands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scaffold.errors import ScaffoldError
from scaffold.spec import ForwardCall

# Sentinel-2 MSI band -> TerraTorch's name for it, with the band's central wavelength and
# bandwidth in nanometres (Sentinel-2A). Source: ESA, "Sentinel-2 Spectral Response Functions
# (S2-SRF)", COPE-GSEG-EOPG-TN-15-0007, issue 3.0 (the table of the Sentinel-2 MSI user guide,
# https://sentiwiki.copernicus.eu/web/s2-mission, "Spectral resolution").
SENTINEL2: tuple[tuple[str, str, float, float], ...] = (
    ("B01", "COASTAL_AEROSOL", 442.7, 21.0),
    ("B02", "BLUE", 492.4, 66.0),
    ("B03", "GREEN", 559.8, 36.0),
    ("B04", "RED", 664.6, 31.0),
    ("B05", "RED_EDGE_1", 704.1, 15.0),
    ("B06", "RED_EDGE_2", 740.5, 15.0),
    ("B07", "RED_EDGE_3", 782.8, 20.0),
    ("B08", "NIR_BROAD", 832.8, 106.0),
    ("B8A", "NIR_NARROW", 864.7, 21.0),
    ("B09", "WATER_VAPOR", 945.1, 20.0),
    ("B10", "CIRRUS", 1373.5, 31.0),
    ("B11", "SWIR_1", 1613.7, 91.0),
    ("B12", "SWIR_2", 2202.4, 175.0),
)
# Central wavelength and bandwidth (nm) by TerraTorch band name.
WAVELENGTHS_NM: dict[str, tuple[float, float]] = {n: (c, w) for _, n, c, w in SENTINEL2}
ALIASES: dict[str, str] = {sid: name for sid, name, _, _ in SENTINEL2} | {
    "B1": "COASTAL_AEROSOL",
    "B2": "BLUE",
    "B3": "GREEN",
    "B4": "RED",
    "B5": "RED_EDGE_1",
    "B6": "RED_EDGE_2",
    "B7": "RED_EDGE_3",
    "B8": "NIR_BROAD",
    "B9": "WATER_VAPOR",
}
# TerraTorch's HLSBands, and the other names of its GEO-Bench datasets' bands.
NAMES: tuple[str, ...] = (
    *(name for _, name, _, _ in SENTINEL2),
    "THERMAL_INFRARED_1",
    "THERMAL_INFRARED_2",
    "NIR",
    "CLOUD_PROBABILITY",
    "CANOPY_HEIGHT_MODEL",
    "NEON",
    "VH_REAL",
    "VH_IMAGINARY",
    "VV_REAL",
    "VV_IMAGINARY",
    "VH_LEE_FILTERED",
    "VV_LEE_FILTERED",
    "VH_LEE_FILTERED_REAL",
    "VV_LEE_FILTERED_IMAGINARY",
)


def canonical(name: str, known: Iterable[str] = ()) -> str | None:
    """TerraTorch's name for `name` (any case, a Sentinel-2 id accepted), or None."""
    upper = name.strip().upper().replace(" ", "_").replace("-", "_")
    if upper in ALIASES:
        return ALIASES[upper]
    if upper in NAMES or upper in set(known):
        return upper
    return None


def parse_bands(text: str | Sequence[str], known: Iterable[str] = ()) -> tuple[str, ...]:
    """``--bands BLUE,GREEN,B8A`` -> TerraTorch's names, in the given order. An unknown or
    repeated name is a ScaffoldError that names the known ones. `known`: more names (those of
    the surveyed datasets)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise ScaffoldError("--bands: no band names given (e.g. --bands BLUE,GREEN,RED)")
    extra = tuple(dict.fromkeys(k for k in known if k not in NAMES))
    out: list[str] = []
    for item in items:
        name = canonical(item, extra)
        if name is None:
            names = ", ".join((*NAMES, *extra))
            raise ScaffoldError(
                f"--bands: unknown band {item!r}; the known bands are {names} "
                f"(Sentinel-2 ids such as B02 or B8A are accepted too)"
            )
        if name in out:
            raise ScaffoldError(f"--bands: {item!r} is {name}, given twice")
        out.append(name)
    return tuple(out)


def task_bands(model_bands: Sequence[str], dataset_bands: Sequence[str]) -> tuple[str, ...]:
    """The model's bands that the dataset has, in the model's order."""
    have = set(dataset_bands)
    return tuple(b for b in model_bands if b in have)


def describe(loaded: Sequence[str], new: Sequence[str]) -> str:
    """Which bands of a first layer come from the checkpoint and which are new (initialised)."""
    text = f"loaded from the checkpoint: {', '.join(loaded) or 'none'}"
    return text + (f"; new (initialised): {', '.join(new)}" if new else "")


def band_line(bands: Sequence[str], in_chans: int) -> str:
    """``bands: BLUE (492.4 nm), ...``: the model's bands as `inspect` shows them."""
    shown = [f"{b} ({WAVELENGTHS_NM[b][0]:g} nm)" if b in WAVELENGTHS_NM else b for b in bands]
    line = f"bands: {', '.join(shown)}"
    if len(bands) != in_chans:
        line += f" ({len(bands)} bands; the model was traced with {in_chans} input channels)"
    return line


def names_from_descriptions(descriptions: Sequence[str | None]) -> tuple[str, ...]:
    """A GeoTIFF's band descriptions as band names, when every one is a known name (and none
    repeats); else ``()``: the bands are then known by position only."""
    names = [canonical(d) if d else None for d in descriptions]
    if not names or any(n is None for n in names) or len(set(names)) != len(names):
        return ()
    return tuple(n for n in names if n is not None)


# How close a given per-band value must be to the table's to be read as that column.
TABLE_TOLERANCE = 0.05


def per_band_args(
    call: ForwardCall, model_bands: Sequence[str], bands: Sequence[str]
) -> tuple[dict[str, Any], str]:
    """The per-band forward arguments (``call.per_band``) for a task's `bands`, and where their
    values came from.

    A given list whose values are the table's central wavelengths or bandwidths of the model's
    bands (in micrometres or nanometres, within TABLE_TOLERANCE) is read as that column, and
    the task gets the table's values of its bands in that unit; any other list with one value
    per model band gives the task the values of its bands, by name. A list that fits neither is
    a ScaffoldError naming --bands as the way to give one value per band.
    """
    if not call.per_band:
        return {}, ""
    out: dict[str, Any] = {}
    sources = []
    for name in call.per_band:
        given = list(call.args[name])
        column = _table_column(given, model_bands) if model_bands else None
        if column is not None and all(b in WAVELENGTHS_NM for b in bands):
            index, scale, label = column
            out[name] = [_round(WAVELENGTHS_NM[b][index] * scale) for b in bands]
            sources.append(f"{name}: {label} of the Sentinel-2 table")
        elif model_bands and len(given) == len(model_bands):
            out[name] = [given[list(model_bands).index(b)] for b in bands]
            sources.append(f"{name}: the given values of these bands")
        elif not model_bands and len(given) == len(bands):
            out[name] = given
            sources.append(f"{name}: as given")
        else:
            raise ScaffoldError(
                f"--forward-arg {name}: {len(given)} values, and the model's bands are "
                + (
                    f"{len(model_bands)} (--bands): give one {name} value per band, in the "
                    "order of --bands"
                    if model_bands
                    else f"{len(bands)} in a task: name them with --bands, so that each task "
                    f"gets the {name} of its own bands"
                )
            )
    return out, "; ".join(sources)


def _table_column(
    given: Sequence[Any], model_bands: Sequence[str]
) -> tuple[int, float, str] | None:
    """(column, scale, label) of the wavelength table that the given values are, or None."""
    if not given or len(given) > len(model_bands):
        return None
    try:
        values = [float(v) for v in given]
    except (TypeError, ValueError):
        return None
    firsts = model_bands[: len(values)]
    if not all(b in WAVELENGTHS_NM for b in firsts):
        return None
    for index, what in ((0, "central wavelengths"), (1, "bandwidths")):
        for scale, unit in ((1e-3, "micrometres"), (1.0, "nanometres")):
            table = [WAVELENGTHS_NM[b][index] * scale for b in firsts]
            if all(abs(v - t) <= TABLE_TOLERANCE * t for v, t in zip(values, table, strict=True)):
                return index, scale, f"{what} ({unit})"
    return None


def _round(value: float) -> float:
    return float(f"{value:.6g}")
