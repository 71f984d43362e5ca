"""Reading a dataset with rasterio: file metadata, label values, and band statistics.

The statistics pass streams: each training image is read window by window (at most
WINDOW_BYTES each, so memory does not grow with the dataset) and summed in cache-sized chunks:
exactly in integers for 8- and 16-bit data, in float64 around a per-band shift otherwise (no
cancellation in the variance). On a training split larger than `max_pixels`, a seeded random
choice of windows is read instead of all of them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaffold.errors import ScaffoldError, one_line

WINDOW_BYTES = 64 << 20  # raw bytes of one window at most (a typical tile: the whole file)
DEFAULT_MAX_PIXELS = 50_000_000  # pixels (per band) the statistics read at most


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    count: int
    dtype: str
    height: int
    width: int
    nodata: float | None
    driver: str = ""  # GDAL's name for the format: GTiff, PNG, JP2OpenJPEG, ...
    descriptions: tuple[str | None, ...] = ()  # the bands' descriptions (GDAL's), if any


def raster_info(path: Path) -> RasterInfo:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return RasterInfo(
                path,
                src.count,
                src.dtypes[0],
                src.height,
                src.width,
                _nodata(src.nodata),
                src.driver,
                tuple(src.descriptions),
            )
    except rasterio.errors.RasterioError as exc:
        raise ScaffoldError(f"{path}: rasterio cannot read it ({one_line(exc)})") from exc


def _unreadable(path: Path, exc: BaseException) -> ScaffoldError:
    # rasterio's "Read failed. See previous exception" keeps GDAL's reason as its cause
    reason = exc.__cause__ or exc.__context__ or exc
    return ScaffoldError(
        f"{path}: rasterio cannot read its pixels ({one_line(reason)}); is "
        "the file truncated or damaged?"
    )


def check_pixels(path: Path) -> None:
    """Read the last row of blocks of every band: where a file cut short (a copy that did not
    finish) is missing its data, although its header reads."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(path) as src:
            rows = min(src.height, src.block_shapes[0][0] if src.block_shapes else 1)
            src.read(window=Window(0, src.height - rows, src.width, rows))
    except rasterio.errors.RasterioError as exc:
        raise _unreadable(path, exc) from exc


def _nodata(value: Any) -> float | None:
    return None if value is None else float(value)


def band_count(path: Path) -> int:
    return raster_info(path).count


def _windows(path: Path, rows: int | None = None) -> list[Any]:
    """Row windows of about WINDOW_BYTES, aligned to the file's blocks."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        itemsize = np.dtype(src.dtypes[0]).itemsize
        block = src.block_shapes[0][0] if src.block_shapes else 1
        if rows is None:
            rows = max(1, WINDOW_BYTES // max(1, src.width * src.count * itemsize))
            rows = max(block, rows // block * block)
        return [
            Window(0, top, src.width, min(rows, src.height - top))
            for top in range(0, src.height, rows)
        ]


def read_windows(units: list[tuple[Path, Any]]) -> Iterator[tuple[Path, np.ndarray, Any]]:
    """(path, array (bands, h, w), nodata) for each (path, window), one window in memory."""
    import rasterio

    current: Any = None
    try:
        for path, window in units:
            try:
                if current is None or current.name != str(path):
                    if current is not None:
                        current.close()
                    current = rasterio.open(path)
                array = current.read(window=window)
            except rasterio.errors.RasterioError as exc:
                raise _unreadable(path, exc) from exc
            yield path, array, current.nodata
    finally:
        if current is not None:
            current.close()


# Integer types whose squares fit a uint32 (or int32): summed exactly in integers.
SQUARE_TYPES: dict[str, Any] = {
    "uint8": np.uint32,
    "int8": np.int32,
    "uint16": np.uint32,
    "int16": np.int32,
}


CHUNK = 8192  # columns summed per step


def _first_means(flat: np.ndarray, missing: Any) -> np.ndarray:
    """Per-band means of a window's first columns: the shift that keeps float sums small."""
    head = flat[:, :CHUNK].astype(np.float64)
    valid = np.isfinite(head)
    if missing is not None:
        valid &= flat[:, :CHUNK] != missing
    n = valid.sum(axis=1)
    return np.where(n > 0, np.where(valid, head, 0).sum(axis=1) / np.maximum(n, 1), 0.0)


@dataclass
class BandStats:
    """Per-band count, sum and sum of squares, merged window by window.

    Small integer types are summed exactly (Python ints across windows); other types in float64
    around a per-band shift (the first window's means), so the variance does not cancel.
    """

    bands: int
    shift: np.ndarray | None = None
    count: list[int] = field(init=False)
    total: list[Any] = field(init=False)
    squares: list[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.count = [0] * self.bands
        self.total = [0] * self.bands
        self.squares = [0] * self.bands
        self._buffers: dict[Any, np.ndarray] = {}

    def add(self, array: np.ndarray, nodata: float | None) -> None:
        """Add one window (bands, h, w); `nodata` pixels (and NaN, inf) are left out."""
        flat = array.reshape(self.bands, -1)
        missing = None if nodata is None or math.isnan(nodata) else flat.dtype.type(nodata)
        floating = np.issubdtype(flat.dtype, np.floating)
        exact = SQUARE_TYPES.get(flat.dtype.name)
        if exact is None and self.shift is None:
            self.shift = _first_means(flat, missing)
        work = self._buffer((self.bands, CHUNK), exact or np.float64)
        acc = np.int64 if exact else np.float64
        sums, squares = np.zeros(self.bands, acc), np.zeros(self.bands, acc)
        counts = np.zeros(self.bands, np.int64)
        # Column chunks small enough that the work buffer stays in the CPU cache: the window is
        # read from memory once.
        for start in range(0, flat.shape[1], CHUNK):
            chunk = flat[:, start : start + CHUNK]
            w = work[:, : chunk.shape[1]]
            np.copyto(w, chunk, casting="unsafe")
            if exact is None and self.shift is not None:  # set above when exact is None
                w -= self.shift[:, None]
            valid = None if missing is None else chunk != missing
            if floating:
                finite = np.isfinite(chunk)
                valid = finite if valid is None else valid & finite
            if valid is None:
                counts += chunk.shape[1]
            else:
                np.copyto(w, 0, where=~valid)
                counts += valid.sum(axis=1)
            sums += w.sum(axis=1, dtype=acc)
            np.multiply(w, w, out=w)
            squares += w.sum(axis=1, dtype=acc)
        for b in range(self.bands):
            self.count[b] += int(counts[b])
            self.total[b] += sums[b].item()
            self.squares[b] += squares[b].item()

    def _buffer(self, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[dtype] = np.empty(shape, dtype)
        return buffer

    def result(self) -> tuple[list[float], list[float]]:
        means, stds = [], []
        shift = self.shift if self.shift is not None else np.zeros(self.bands)
        for b in range(self.bands):
            n, s, q = self.count[b], self.total[b], self.squares[b]
            n = max(n, 1)
            if isinstance(s, int) and isinstance(q, int):  # exact: (nQ - S^2) / n^2
                means.append(s / n)
                stds.append(math.sqrt(max(n * q - s * s, 0) / (n * n)))
            else:
                m = s / n
                means.append(m + float(shift[b]))
                stds.append(math.sqrt(max(q / n - m * m, 0.0)))
        return means, stds


def band_statistics(
    paths: list[Path],
    bands: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Any = None,
    seed: int = 0,
) -> tuple[list[float], list[float], int, int]:
    """(means, stds, pixels used, pixels in total) per band over `paths`, nodata excluded."""
    units: list[tuple[Path, Any]] = [(p, w) for p in paths for w in _windows(p)]
    sizes = [int(w.width * w.height) for _, w in units]
    total = sum(sizes)
    if max_pixels is not None and total > max_pixels:
        order = np.random.default_rng(seed).permutation(len(units))
        taken, used = [], 0
        for i in order:
            if used >= max_pixels:
                break
            taken.append(int(i))
            used += sizes[i]
        taken.sort()  # file order: sequential reads
        units = [units[i] for i in taken]
    used = sum(int(w.width * w.height) for _, w in units)
    stats = BandStats(bands)
    with _bar(progress, "band statistics (training split)", used) as advance:
        for _, array, nodata in read_windows(units):
            stats.add(array, _nodata(nodata))
            advance(array.shape[-1] * array.shape[-2])
    means, stds = stats.result()
    empty = [i + 1 for i, c in enumerate(stats.count) if c == 0]
    if empty:
        raise ScaffoldError(f"band(s) {empty} hold no valid pixel in the training split")
    return means, stds, used, total


@dataclass
class LabelValues:
    """What the labels of one file hold."""

    values: set[float]  # distinct values (integral labels), nodata excluded
    integral: bool
    minimum: float
    maximum: float
    has_nan: bool


MAX_DISTINCT = 1024  # beyond this many distinct values a label is a measurement, not a class


def label_values(path: Path) -> LabelValues:
    """Distinct values of a one-band label file, read window by window."""
    values: set[float] = set()
    integral, has_nan = True, False
    lo, hi = math.inf, -math.inf
    for _, array, nodata in read_windows([(path, w) for w in _windows(path)]):
        a = array.reshape(-1)
        if nodata is not None and not math.isnan(nodata):
            a = a[a != a.dtype.type(nodata)]
        if np.issubdtype(a.dtype, np.floating):
            nan = np.isnan(a)
            if nan.any():
                has_nan = True
                a = a[~nan]
            if integral and a.size and not bool(np.all(np.floor(a) == a)):
                integral = False
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        if integral and len(values) <= MAX_DISTINCT:
            values.update(float(v) for v in np.unique(a))
    if len(values) > MAX_DISTINCT:
        integral = False
    return LabelValues(values, integral, lo, hi, has_nan)


@contextlib.contextmanager
def _bar(progress: Any, what: str, total: int) -> Iterator[Any]:
    """A progress bar on `progress` (a rich Console on stderr); a no-op without one."""
    if progress is None:
        yield lambda n: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(
        *columns, console=progress, transient=True, disable=not progress.is_terminal
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
