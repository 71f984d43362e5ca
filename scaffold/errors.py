"""The one exception type for problems a person can fix: the CLI prints it on one line, exit 2."""


class ScaffoldError(Exception):
    """Bad input: a missing file, a model that cannot be built, a name that is taken, ...

    The message says what is wrong and where; it is shown without a traceback.
    """


def one_line(exc: BaseException) -> str:
    """``ValueError: the first line of its message``: how a foreign exception is quoted to a person."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
