"""Whether a runner can create the folders its storage names, checked without creating any.

A run writes its results (MLflow's store, Optuna's database, Lightning's logs) under a folder
it creates with its parents. The check walks up from the path to the first part that exists:
that part must be a folder this process may write in. Nothing is created, so nothing is left
behind. URIs of a server (``http://...``) are the server's business and are not checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

CANNOT = "the real run cannot create its folders there"


def local_folder(uri: str) -> Path | None:
    """The local folder a storage `uri` writes in: the path itself, a ``file:`` URI's path,
    or the folder of a ``sqlite:///`` database; None for a server's URI."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent  # sqlite:////abs/x.db: /abs
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        return None
    return Path(uri)


def folder_storage(folder: Path, uri: object) -> str:
    """A storage URI as a run started in the output folder `folder` opens it: a relative path
    joined to the folder; a URI, an absolute path or nothing ("") as it is."""
    text = str(uri or "")
    parsed = urlparse(text)
    if not text or (parsed.scheme and len(parsed.scheme) > 1) or Path(text).is_absolute():
        return text
    return str(Path(folder) / text)


def unwritable(folder: Path) -> str | None:
    """Why `folder` (and its parents) could not be created or written in; None: they can."""
    folder = Path(os.path.abspath(folder))
    found = folder
    while not os.path.lexists(found) and found != found.parent:
        found = found.parent
    if not found.is_dir():
        return f"{found} is a file, not a folder"
    if not os.access(found, os.W_OK | os.X_OK):
        return f"{found} is a folder this user cannot write in"
    return None


def storage_problem(key: str, uri: object) -> str | None:
    """A finding naming `key` and its value when the storage `uri` cannot be written."""
    if not isinstance(uri, str) or not uri:
        return None  # missing or not text: the runner's own parser says so
    folder = local_folder(uri)
    why = None if folder is None else unwritable(folder)
    return None if why is None else f"{key}: {uri}: {why}: {CANNOT}"
