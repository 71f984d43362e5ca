"""The one exception type for problems a person can fix: the CLI prints it on one line, exit 2."""

import os


class ScaffoldError(Exception):
    """Bad input: a missing file, a model that cannot be built, a name that is taken, ...

    The message says what is wrong and where; it is shown without a traceback.
    """


def one_line(exc: BaseException) -> str:
    """``ValueError: the first line of its message``: how a foreign exception is quoted to a person."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def not_utf8(text: str) -> str | None:
    """`text` shown with its bytes that are not UTF-8 as ``\\xNN``, when it holds any (Python keeps
    such a byte of a path or an argument as a lone surrogate); None when it is all UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(text).decode("utf-8", "backslashreplace")
        except UnicodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def printable(text: str) -> str:
    """`text` as it can be printed: bytes that are not UTF-8 shown as ``\\xNN``."""
    return not_utf8(text) or text


def check_utf8_path(what: str, path: object) -> None:
    """ScaffoldError when `path` holds a byte that is not UTF-8: scaffold writes paths into
    YAML and JSON files, which are UTF-8. `what` says what the path is (``--out``, a file)."""
    shown = not_utf8(str(path))
    if shown is not None:
        raise ScaffoldError(
            f"{what} {shown}: a name with a byte that is not UTF-8; the YAML and JSON files "
            "scaffold writes name paths in UTF-8: rename it"
        )
