"""The exception types user mistakes travel in.

The CLI turns a `PylosError` into one `ERROR: <message>` line on stderr (indented detail lines
may follow) and its `exit_code`, so a user never sees a traceback; anything else escaping is a
pylos bug. Exit status 2 is a usage error: a bad option or argument, a file that cannot be
read, the environment. Exit status 1 is rejected input: a file that was read but whose content
is malformed or fails a check (`InputError`; rejected evidence, `VerificationError`, too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class PylosError(Exception):
    """A user-facing error: bad input, a missing file, a policy violation found at build time."""

    exit_code = 2


class InputError(PylosError, ValueError):
    """The content of an input (a quote, a certificate, a SIGSTRUCT, a manifest, a protected
    file, Occlum.json, a bom) is malformed or fails a check: exit status 1.

    Also a ValueError, so callers that treat a parser's ValueError as "not valid" keep working.
    """

    exit_code = 1


@contextmanager
def about(source: str | None, *, file: bool = False) -> Iterator[None]:
    """Say what a PylosError raised inside is about: `<source>: <message>` (nested: `<file>:
    <part>: <message>`). With `file`, `source` is a file of its own (e.g. the collateral
    read for a quote): enclosing `about`s add nothing to its errors."""
    try:
        yield
    except PylosError as exc:
        if source and not getattr(exc, "standalone", False):
            exc.args = (f"{source}: {exc}",)
            if file:
                exc.standalone = True  # type: ignore[attr-defined]
        raise
