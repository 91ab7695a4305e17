"""The options of `pylos run`, parsed without the CLI framework (every enclave start pays for
importing it): `pylos run [--sgx | --direct] [--log-level LEVEL] [--trace[=FILE]] APP [ARGS]`.
Options end at APP (or `--`): everything after it is the program's."""

from __future__ import annotations

from pylos.errors import PylosError

LOG_LEVELS = ("none", "error", "warning", "debug", "trace", "all")

USAGE = """\
Usage: pylos run [--sgx | --direct] [--log-level LEVEL] [--trace[=FILE]] APP [ARGS]...

  Run APP in its enclave. With APP.manifest.sgx and APP.sig (made by `pylos sign`) the
  signature and the measurement are checked first, as gramine-sgx does; with only
  APP.manifest it runs unsigned (development mode, as gramine-direct does) and says so.
  In a workspace (Occlum.json in the current directory) APP is a path inside the image.

Options:
  --sgx                refuse to run without a valid APP.manifest.sgx and APP.sig
  --direct             run APP.manifest unsigned (no measurement: no reports, quotes or
                       sealing keys), even where a signed manifest exists
  --log-level LEVEL    override loader.log_level: none, error, warning, debug, trace, all
  --trace[=FILE]       log every trapped system call and its verdict (to FILE if given)
  --help               show this message

Exit status: the program's (128 + N when signal N ended it); 2 for a bad manifest, a bad
signature or a bad option; 1 when the enclave could not start.
"""


class RunOptions:
    """What `pylos run`'s options ask for."""

    def __init__(self, mode: str = "auto", log_level: str | None = None,
                 trace_file: str | None = None) -> None:
        self.mode = mode  # auto: signed when APP.manifest.sgx exists; sgx; direct
        self.log_level = log_level
        self.trace_file = trace_file


def parse_run_args(argv: list[str]) -> tuple[RunOptions, str | None, list[str]]:
    """(options, APP, the program's arguments); APP is None when --help was asked for."""
    options = RunOptions()
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, has_value, value = arg.partition("=")
        if arg == "--":
            i += 1
            break
        if arg in ("--help", "-h"):
            return options, None, []
        if arg in ("--sgx", "--direct"):
            wanted = arg[2:]
            if options.mode not in ("auto", wanted):
                raise PylosError("pylos run: --sgx and --direct exclude each other")
            options.mode = wanted
        elif name == "--log-level":
            if not has_value:
                i += 1
                if i == len(argv):
                    raise PylosError("pylos run: --log-level needs a level "
                                     f"({', '.join(LOG_LEVELS)})")
                value = argv[i]
            if value not in LOG_LEVELS:
                raise PylosError(f"pylos run: --log-level {value!r}: expected one of "
                                 f"{', '.join(LOG_LEVELS)}")
            options.log_level = value
        elif name == "--trace":
            options.log_level = "trace"
            if has_value:
                if not value:
                    raise PylosError("pylos run: --trace=FILE needs a file name")
                options.trace_file = value
        else:
            raise PylosError(f"pylos run: unknown option {arg!r} (see pylos run --help)")
        i += 1
    if i == len(argv):
        raise PylosError("pylos run: missing APP (see pylos run --help)")
    return options, argv[i], argv[i + 1:]
