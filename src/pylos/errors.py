"""The one exception type user mistakes travel in.

The CLI turns a `PylosError` into `ERROR: <message>` on stderr and exit status 2, so a user
never sees a traceback for bad input; anything else escaping is a pylos bug.
"""


class PylosError(Exception):
    """A user-facing error: bad input, a missing file, a policy violation found at build time."""

    exit_code = 2
