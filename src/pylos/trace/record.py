"""What a traced run observed, and how several runs are kept together in a template.

A `Run` holds only facts of the run (paths and how they were used, counts, peaks), never host
environment values; it is stored, as JSON inside a Jinja comment at the end of the generated
template, so that `pylos trace --append` can merge new runs into it. Jinja drops comments when
rendering, so the stored runs never reach the manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from pylos.errors import InputError

# How a path was used (letters of `Run.paths` values, kept sorted):
READ = "r"        # opened for reading (an existing file)
WRITTEN = "w"     # opened for writing or truncated (an existing file), or O_TMPFILE in a dir
CREATED = "c"     # made by the run: a file, directory, link, socket or FIFO that did not exist
REMOVED = "u"     # unlinked, removed or renamed away
EXECUTED = "x"    # executed (execve, or mapped by the kernel as an ELF or `#!` interpreter)
MAPPED = "m"      # mapped executable (mmap with PROT_EXEC; keyed by the file's real path)
LISTED = "d"      # a directory opened (listed)
LOOKED_UP = "p"   # opened with O_PATH: looked up, not read
USES = READ + WRITTEN + CREATED + REMOVED + EXECUTED + MAPPED + LISTED + LOOKED_UP

FORMAT_VERSION = 1
DATA_START = "{#- pylos-trace-data"
DATA_END = "-#}"
_DATA_BLOCK = re.compile(r"^\{#- pylos-trace-data (\d+)\n(.*?)\n-#\}\n?\Z", re.S | re.M)


@dataclass
class Run:
    """One traced run of a command (and of everything it started)."""

    argv: list[str]
    entrypoint: str                 # absolute path of the executable first run
    cwd: str                        # the working directory of the run
    exit_status: int = 0
    paths: dict[str, str] = field(default_factory=dict)  # absolute path -> sorted use letters
    probes: int = 0                 # opens of paths that did not exist (library searches...)
    processes: int = 0
    peak_threads: int = 1           # live threads of one process at a time, main included
    peak_address_space_mib: int = 0  # VmPeak of the largest process, rounded up to MiB
    peak_stack_kib: int = 0         # VmStk (main thread's stack) of the deepest process
    stack_limit: int | None = None  # RLIMIT_STACK the program set itself (bytes)
    user: list[int] | None = None   # [uid, gid] the program switched to (setuid/setgid)
    handles_sigterm: bool = False   # installed a SIGTERM handler (a clean shutdown)
    network: list[str] = field(default_factory=list)  # sorted: "listen tcp 127.0.0.1:6379"
    exec_dirs: list[str] = field(default_factory=list)  # dirs of executed files, PATH order

    def use(self, path: str, letter: str) -> None:
        uses = self.paths.get(path, "")
        if letter not in uses:
            self.paths[path] = "".join(sorted(uses + letter))


def encode_runs(runs: list[Run]) -> str:
    """The data block ending a generated template (deterministic: sorted keys, one path a
    line)."""
    body = json.dumps({"runs": [asdict(run) for run in runs]}, indent=1, sort_keys=True)
    # "#}" (only ever inside a JSON string: a path, an argument) would end the comment.
    body = body.replace("#}", "#\\u007d")
    return f"{DATA_START} {FORMAT_VERSION}\n{body}\n{DATA_END}\n"


def decode_runs(text: str, source: str) -> list[Run]:
    """The runs stored in a template `pylos trace` wrote; InputError for any other file."""
    match = _DATA_BLOCK.search(text)
    if match is None:
        raise InputError(f"{source}: not a template written by `pylos trace` (no "
                         f"'{DATA_START}' block at its end): --append merges into a "
                         "template that `pylos trace` made")
    if int(match[1]) != FORMAT_VERSION:
        raise InputError(f"{source}: trace data format {match[1]} is not supported (this pylos "
                         f"writes format {FORMAT_VERSION})")
    try:
        stored = json.loads(match[2])
        runs = [Run(**entry) for entry in stored["runs"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{source}: the '{DATA_START}' block is damaged ({exc}): trace again "
                         "without --append") from None
    for run in runs:
        if not isinstance(run.paths, dict) or not all(
                isinstance(uses, str) and set(uses) <= set(USES) for uses in run.paths.values()):
            raise InputError(f"{source}: the '{DATA_START}' block is damaged (bad path uses): "
                             "trace again without --append")
    return runs
