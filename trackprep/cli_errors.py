"""How both command-line tools (`trackprep`, `track4gen`) report a user error: `error: ...` on
stderr and an exit code, no traceback. Kept outside trackprep.cli so that importing it does not
register (and import) every trackprep command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer

EXIT_FAILED, EXIT_USAGE = 1, 2


def fail(message: object, code: int = EXIT_USAGE) -> NoReturn:
    # Tidy spacing within lines but keep the lines of multi-line messages (e.g. missing RAFT weights).
    lines = [" ".join(line.split()) for line in str(message).splitlines() if line.strip()]
    typer.echo("error: " + "\n".join(lines), err=True)
    raise typer.Exit(code=code)


@contextlib.contextmanager
def user_errors(*errors: type[BaseException], code: int = EXIT_USAGE) -> Iterator[None]:
    """Report the given exception types with `fail`; anything else keeps its traceback."""
    try:
        yield
    except errors as exc:
        fail(exc, code)
