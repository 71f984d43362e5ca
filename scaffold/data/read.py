"""Reading a dataset with rasterio: file metadata, label values, and band statistics.

The statistics pass streams: each training image is read window by window (a few MB each, so
memory does not grow with the dataset), a reader thread fetches the next window while this one
is summed, and per-band sums are kept in float64 around a per-band shift (no cancellation in the
variance). On a training split larger than `max_pixels`, a seeded random choice of windows is
read instead of all of them.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaffold.errors import ScaffoldError

WINDOW_BYTES = 8 << 20  # raw bytes of one window
DEFAULT_MAX_PIXELS = 50_000_000  # pixels (per band) the statistics read at most
PREFETCH = 2  # windows read ahead


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    count: int
    dtype: str
    height: int
    width: int
    nodata: float | None


def raster_info(path: Path) -> RasterInfo:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return RasterInfo(
                path, src.count, src.dtypes[0], src.height, src.width, _nodata(src.nodata)
            )
    except rasterio.errors.RasterioError as exc:
        raise ScaffoldError(f"{path}: rasterio cannot read it ({exc})") from exc


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
    """(path, array (bands, h, w), nodata) for each (path, window), read ahead by a thread."""
    import rasterio

    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def reader() -> None:
        try:
            current: Any = None
            for path, window in units:
                if stop.is_set():
                    return
                if current is None or current.name != str(path):
                    if current is not None:
                        current.close()
                    current = rasterio.open(path)
                q.put((path, current.read(window=window), current.nodata))
            if current is not None:
                current.close()
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


@dataclass
class BandStats:
    """Per-band count, shifted sum and shifted sum of squares, merged window by window."""

    bands: int
    shift: np.ndarray | None = None
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    squares: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.bands, np.int64)
        self.total = np.zeros(self.bands, np.float64)
        self.squares = np.zeros(self.bands, np.float64)

    def add(self, array: np.ndarray, nodata: float | None) -> None:
        flat = array.reshape(self.bands, -1)
        floating = np.issubdtype(flat.dtype, np.floating)
        values = flat.astype(np.float64)
        valid = None
        if nodata is not None and not math.isnan(nodata):
            valid = flat != flat.dtype.type(nodata)
        if floating:
            finite = np.isfinite(values)
            valid = finite if valid is None else valid & finite
        if self.shift is None:  # the first window's means: later sums stay near zero
            if valid is None:
                self.shift = values.mean(axis=1) if values.size else np.zeros(self.bands)
            else:
                n = np.maximum(valid.sum(axis=1), 1)
                self.shift = np.where(valid, values, 0).sum(axis=1) / n
        values -= self.shift[:, None]
        if valid is None:
            self.count += values.shape[1]
        else:
            values[~valid] = 0.0
            self.count += valid.sum(axis=1)
        self.total += values.sum(axis=1)
        self.squares += np.einsum("ij,ij->i", values, values)

    def result(self) -> tuple[list[float], list[float]]:
        n = np.maximum(self.count, 1)
        mean_shifted = self.total / n
        var = np.maximum(self.squares / n - mean_shifted**2, 0.0)
        shift = self.shift if self.shift is not None else np.zeros(self.bands)
        return (mean_shifted + shift).tolist(), np.sqrt(var).tolist()


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
    if stats.count.size and int(stats.count.min()) == 0:
        empty = [i + 1 for i, c in enumerate(stats.count) if c == 0]
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
    with Progress(*columns, console=progress, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
