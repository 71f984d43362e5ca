"""What a GEO-Bench v1 sample's pickled attributes may hold, checked without running any of it.

TerraTorch's GEO-Bench readers (``m_pv4ger``, ``m_brick_kiln``, ``m_forestnet``, ``m_so2sat``) call
``pickle.loads`` on each sample's ``pickle`` attribute: a class or function named there is
imported and called, so a crafted download runs code in any reader. Nothing else in a GEO-Bench
folder is unpickled (the partition and label files are JSON, the bands h5 arrays).

geobench writes that attribute (``write_sample_hdf5``) as a dict of plain values (the label, band
names), numpy arrays and scalars, and per band its ``BandInfo`` object, a date, an affine transform
and a CRS. `load_attributes` reads it with an unpickler that builds plain values and numpy arrays
(never of Python objects), stands an inert stub in for those few classes (never imported, nothing
of theirs runs) and refuses any other global, naming it: `UnsafePickle`.
"""

from __future__ import annotations

import ast
import io
import pickle
from pathlib import Path
from typing import Any

# geobench's data classes (band infos, bands, label types), under each module name geobench has
# written them from (``ccb`` and ``geobench.io`` are its older names).
_GEOBENCH_MODULES = frozenset(
    {
        "geobench", "geobench.dataset", "geobench.label", "geobench.io", "geobench.io.dataset",
        "geobench.io.label", "ccb", "ccb.io", "ccb.io.dataset", "ccb.io.label",
    }
)  # fmt: skip
_GEOBENCH_CLASSES = frozenset(
    {
        "BandInfo", "SpectralBand", "Sentinel1", "Sentinel2", "Landsat8", "Mask",
        "ElevationBand", "MultiBand", "HyperSpectralBands", "CloudProbability",
        "SegmentationClasses", "Band", "LabelType", "Classification", "SemanticSegmentation",
        "MultiLabelClassification", "Regression",
    }
)  # fmt: skip
# Other classes of a band's metadata: stubs too (their own code never runs here).
_OTHER_CLASSES = frozenset(
    {
        ("affine", "Affine"),
        ("rasterio.crs", "CRS"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
    }
)
# Builtins the pickle protocols name for plain values: real, they run nothing of the file's.
_PLAIN = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "object"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "bytearray"),
    ("__builtin__", "complex"),
    ("__builtin__", "object"),
    ("_codecs", "encode"),  # how protocols 0-2 write bytes
    ("collections", "OrderedDict"),
}


class UnsafePickle(Exception):
    """A pickle names a global that GEO-Bench never writes (`what`: ``module.name``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Stub:
    """An inert stand-in for an allowed class: takes any arguments and state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _multiarray() -> Any:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _no_objects(dtype: Any, what: str) -> None:
    """numpy restores an array or scalar of Python objects by unpickling its items: refused."""
    import numpy as np

    if np.dtype(dtype).hasobject:
        raise UnsafePickle(f"{what} of Python objects")


def _dtype(*args: Any) -> Any:
    import numpy as np

    dtype = np.dtype(*args)
    _no_objects(dtype, "numpy.dtype")
    return dtype


def _scalar(dtype: Any, *args: Any) -> Any:
    _no_objects(dtype, "numpy scalar")
    return _multiarray().scalar(dtype, *args)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np

    if subtype is not np.ndarray:  # a subclass could bring code of its own
        raise UnsafePickle(f"an array of type {subtype!r}")
    return _multiarray()._reconstruct(subtype, shape, dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
    """How protocol 5 restores an array."""
    _no_objects(dtype, "numpy array")
    try:
        from numpy._core import numeric
    except ImportError:  # numpy < 2
        from numpy.core import numeric  # type: ignore[no-redef]
    return numeric._frombuffer(buffer, dtype, shape, order)  # type: ignore[attr-defined]  # private, as pickles call it


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg's way (protocols 0 and 1) to make an instance of a plain class: a stub's only."""
    if not (isinstance(cls, type) and issubclass(cls, _Stub)):
        raise UnsafePickle(f"copyreg._reconstructor of {cls!r}")
    return cls()


_RESTORERS = {
    ("numpy", "dtype"): _dtype,
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{
        (m, "_reconstruct"): _reconstruct
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(m, "_frombuffer"): _frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
}


class _Unpickler(pickle.Unpickler):
    """Builds what GEO-Bench writes; refuses every other global (`UnsafePickle`)."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _RESTORERS:
            return _RESTORERS[key]
        if key == ("numpy", "ndarray"):
            import numpy as np

            return np.ndarray
        if key in _PLAIN:
            return super().find_class(module, name)
        if key in _OTHER_CLASSES or (module in _GEOBENCH_MODULES and name in _GEOBENCH_CLASSES):
            return type(name, (_Stub,), {"__module__": module})
        raise UnsafePickle(f"{module}.{name}")


def load_attributes(raw: Any) -> Any:
    """A sample's ``pickle`` attribute (the repr of the pickled bytes, as TerraTorch reads it),
    unpickled safely. Raises UnsafePickle for a global GEO-Bench never writes, ValueError (and
    pickle's errors) for what is no pickle."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    value = ast.literal_eval(text)
    if not isinstance(value, bytes):
        raise ValueError(f"the attribute holds a {type(value).__name__}, not pickled bytes")
    return _Unpickler(io.BytesIO(value)).load()


def unsafe_global(raw: Any) -> str | None:
    """The global (``module.name``) an attribute's pickle names that GEO-Bench never writes;
    None when it holds none (or is no pickle at all: that is for the survey to say)."""
    try:
        load_attributes(raw)
    except UnsafePickle as exc:
        return exc.what
    except Exception:
        return None
    return None


def sample_files(folder: Path) -> list[Path]:
    """The sample files of a GEO-Bench folder, in name order."""
    return sorted(p for p in folder.glob("*.hdf5") if p.is_file())


def check_folder_pickles(folder: Path) -> tuple[Path, str] | None:
    """The first sample of `folder` whose ``pickle`` attribute names a global GEO-Bench never
    writes, and that global; None when every sample's is safe to unpickle. A file h5py cannot
    open is left to the survey (and to the readers, which cannot open it either)."""
    import h5py

    for path in sample_files(folder):
        try:
            with h5py.File(path, "r") as h5:
                raw = h5.attrs.get("pickle")
        except OSError:
            continue
        if raw is not None and (what := unsafe_global(raw)) is not None:
            return path, what
    return None


def refusal(path: Path, what: str) -> str:
    """The one line that refuses a folder: the file and what its pickle would have loaded."""
    return (
        f"{path}: its 'pickle' attribute would load {what}, which no GEO-Bench sample holds; "
        "TerraTorch's reader would unpickle it (a pickle runs what it names): refused"
    )
