"""From traced runs to a Gramine-syntax manifest template: what to mount, trust and allow.

The template describes the traced machine: every host path keeps its own path in the enclave
(mount `path` = `uri`), over an empty read-only root, so the program finds everything where
it found it natively. The rules, in order:

- paths under /proc, /dev and /sys are the enclave's own: never mounted (listed in a comment
  when they are beyond what pylos provides);
- a place written natively is writable in the enclave: an allowed file (written in place), an
  allowed directory (a file was created, removed or renamed in it; a directory the run made is
  allowed itself, pylos creates it at start), or, under /tmp, /var/tmp and /run (outside the
  working directory), a tmpfs mount; writes in system directories (/usr, /etc, /lib...) are
  not made writable, only reported;
- every other regular file read, executed or mapped is trusted, by its real path (trusted
  files are matched by inode, so /lib/x/libc.so.6 and /usr/lib/x/libc.so.6 are one entry); a
  directory of which more than half of the files were used becomes one `dir/` entry;
- mounts cover every path as the program named it: in system directories the directory at
  depth <= 3 (`/usr/lib/x86_64-linux-gnu`, `/usr/lib/python3.11`, a file such as
  `/etc/ld.so.cache` on its own), elsewhere the directory itself; a symbolic link whose target
  lies outside its mount (`/usr/bin/awk` -> `/etc/alternatives/awk`) adds the target's mount;
- limits come from the peaks: `sgx.max_threads` from the most threads one process had,
  `sgx.enclave_size` from the largest VmPeak (+25 %, a power of two, at least 64M),
  `sys.stack.size` when the program set RLIMIT_STACK or its main stack grew past 192 KiB.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from pylos.errors import PylosError
from pylos.trace.observe import PROVIDED, provided
from pylos.trace.record import (
    CREATED,
    EXECUTED,
    LISTED,
    MAPPED,
    READ,
    REMOVED,
    WRITTEN,
    Run,
    encode_runs,
)

SYSTEM_ROOTS = ("/usr", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt")
TMP_ROOTS = ("/tmp", "/var/tmp", "/run", "/var/run")
SYSTEM_MOUNT_DEPTH = 3
COLLAPSE_MIN_DEPTH = 2  # never `file:/usr/` or `file:/etc/`
MIN_ENCLAVE_MIB = 64
DEFAULT_STACK_KIB = 256  # pylos's and Gramine's sys.stack.size default
STACK_GROWN_KIB = 192
# What pylos's enclave offers under /dev and /sys (runtime/namespaces.py).
PROVIDED_DEV = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
                "/dev/shm", "/dev/pts/")
PROVIDED_SYS = ("/sys/devices/system/cpu", "/sys/devices/system/node")
MAX_SYMLINK_HOPS = 40


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


@dataclass
class Merged:
    """The union of several runs of one program."""

    runs: list[Run]
    uses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for run in self.runs:
            for path, letters in run.paths.items():
                self.uses[path] = "".join(sorted(set(self.uses.get(path, "")) | set(letters)))

    @property
    def first(self) -> Run:
        return self.runs[0]

    def peak(self, name: str) -> int:
        return max(getattr(run, name) for run in self.runs)


def merge(runs: list[Run]) -> Merged:
    if not runs:
        raise PylosError("no traced run to write a template for")
    entrypoints = sorted({run.entrypoint for run in runs})
    if len(entrypoints) > 1:
        raise PylosError(f"the runs executed different programs ({', '.join(entrypoints)}): "
                         "a manifest has one libos.entrypoint; trace each into its own template")
    return Merged(runs)


@dataclass
class Layout:
    """Where each used path goes in the manifest."""

    trusted: set[str] = field(default_factory=set)          # real paths of files
    allowed_dirs: set[str] = field(default_factory=set)     # as named
    allowed_files: set[str] = field(default_factory=set)    # as named
    tmpfs: set[str] = field(default_factory=set)
    tmpfs_writes: set[str] = field(default_factory=set)     # paths written in those
    refused_writes: set[str] = field(default_factory=set)
    provided: set[str] = field(default_factory=set)
    needed: set[str] = field(default_factory=set)           # names the view must resolve
    mounts: list[str] = field(default_factory=list)
    trusted_entries: list[tuple[str, int, int]] = field(default_factory=list)  # uri, used, of
    dns: bool = False
    start_dir: str | None = None
    used_files: int = 0
    written: int = 0


def tmp_root(path: str) -> str | None:
    return next((root for root in TMP_ROOTS if _under(path, root)), None)


def system(path: str) -> bool:
    return any(_under(path, root) for root in SYSTEM_ROOTS)


def plan(merged: Merged) -> Layout:
    layout = Layout()
    cwd = merged.first.cwd
    for path, uses in sorted(merged.uses.items()):
        if provided(path):
            layout.provided.add(path)
            continue
        if path == "/etc/resolv.conf" and READ in uses:
            layout.dns = True  # pylos puts a sanitized copy of the host's there
            continue
        targets = _writable_places(path, uses)
        for target in targets:
            _place_write(layout, target, path, cwd)
        if targets:
            layout.written += 1
        elif set(uses) & {READ, EXECUTED, MAPPED} and os.path.isfile(path):
            layout.trusted.add(os.path.realpath(path))
            layout.used_files += 1
        if not targets and uses != MAPPED and os.path.lexists(path) and not (
                set(uses) <= {LISTED} and _depth(path) <= 1):
            layout.needed.add(path)
    # An allowed directory covers what is below it. Files only read there stay trusted:
    # trusted files are matched first (by inode), so they are verified and read-only.
    layout.allowed_dirs = {d for d in layout.allowed_dirs
                           if not any(_under(d, o) and d != o for o in layout.allowed_dirs)}
    layout.allowed_files = {f for f in layout.allowed_files
                            if not any(_under(f, d) for d in layout.allowed_dirs)}
    layout.needed |= layout.allowed_dirs | layout.allowed_files
    if cwd != "/" and any(_under(path, cwd) for path in layout.needed):
        layout.start_dir = cwd
        layout.needed.add(cwd)
    layout.mounts = choose_mounts(layout.needed, layout.tmpfs, layout.tmpfs_writes)
    layout.trusted_entries = collapse(layout.trusted, layout.allowed_dirs | layout.tmpfs, cwd)
    return layout


def _writable_places(path: str, uses: str) -> list[str]:
    """What must be writable for the run's uses of `path`: the file itself (written in
    place), the directory it was created in or removed from, or a directory the run made."""
    places = []
    if WRITTEN in uses:
        places.append(path)
    if CREATED in uses or REMOVED in uses:
        if CREATED in uses and os.path.isdir(path) and not os.path.islink(path):
            places.append(path)
        else:
            places.append(os.path.dirname(path))
    return places


def _place_write(layout: Layout, target: str, path: str, cwd: str) -> None:
    while not os.path.lexists(target) and target != "/":
        target = os.path.dirname(target)  # made and removed by the run: where it was made
    root = tmp_root(target)
    if root is not None and not _under(target, cwd):
        layout.tmpfs.add(root)
        layout.tmpfs_writes.add(path)
    elif system(target):
        layout.refused_writes.add(target)
    elif os.path.isdir(target):
        layout.allowed_dirs.add(target)
    else:
        layout.allowed_files.add(target)


def mount_point(path: str) -> str:
    """The mount that makes `path` (as the program names it) visible."""
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    if system(path):
        if _depth(directory) <= 1:
            return path  # /etc/ld.so.cache, /lib64/ld-linux-x86-64.so.2: the entry alone
        parts = directory.split("/")[1:SYSTEM_MOUNT_DEPTH + 1]
        return "/" + "/".join(parts)
    if directory == "/":
        return path
    return directory


def choose_mounts(needed: Iterable[str], tmpfs: Iterable[str] = (),
                  tmpfs_writes: Iterable[str] = ()) -> list[str]:
    """Mount points (host path = enclave path) covering every needed name, with the targets
    of symbolic links that leave their mount; sorted, none inside another. A host directory
    mounted over a path the program writes in a tmpfs would hide the tmpfs there: such a
    name is mounted alone (a file), or not at all."""
    mounts: set[str] = set()
    names = set(needed)
    writes = set(tmpfs_writes)
    while True:
        for path in sorted(names):
            if any(_under(path, mount) for mount in mounts):
                continue
            for mount in (mount_point(path), path):
                if not any(_under(written, mount) for written in writes):
                    mounts.add(mount)
                    break
        mounts = {m for m in mounts if not any(_under(m, o) and m != o for o in mounts)}
        more = {link for path in names for link in _escaping_links(path, mounts)} - names
        if not more:
            break
        names |= more
    tmp = set(tmpfs)
    return sorted(m for m in mounts if m not in tmp)


def _escaping_links(path: str, mounts: set[str]) -> list[str]:
    """The paths the view must also resolve for `path` to resolve in it: a symbolic link
    met on the way whose target leaves the mount it lies in continues at that target."""
    mount = max((m for m in mounts if _under(path, m)), key=len, default=None)
    if mount is None or mount == path:
        return []  # a mount of the entry itself: the bind follows the host's links
    rest = [part for part in path[len(mount):].split("/") if part]
    named, host = mount, os.path.realpath(mount)
    for index, part in enumerate(rest):
        candidate = os.path.join(host, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            remaining = rest[index + 1:]
            joined = os.path.normpath(os.path.join(named, target))
            continuation = os.path.join(joined, *remaining) if remaining else joined
            if target.startswith("/") or not _under(joined, mount):
                return [continuation]
            return _escaping_links(continuation, mounts) if continuation != path else []
        named, host = os.path.join(named, part), candidate
    return []


def collapse(files: set[str], writable: set[str], cwd: str) -> list[tuple[str, int, int]]:
    """Trusted entries: (URI, files used, files there) — a directory (`dir/`) where more than
    half of its files (Gramine's recursive expansion) were used, else the files themselves.

    Never the working directory's tree or its ancestors: the application's own files are
    listed one by one, as the template, manifest and signature are written there."""
    entries = {path: (1, 1) for path in files}
    # Python stats a module's source to validate its compiled __pycache__ file: the source
    # counts as used (for the choice of directories only) when its .pyc was read.
    sources = {_source_of(path) for path in files} - {None} - files
    directories = sorted({os.path.dirname(path) for path in files}, key=_depth, reverse=True)
    candidates = set()
    for directory in directories:
        while _depth(directory) >= COLLAPSE_MIN_DEPTH:
            candidates.add(directory)
            directory = os.path.dirname(directory)
    for directory in sorted(candidates, key=lambda d: (-_depth(d), d)):
        inside = [path for path in entries if _under(path, directory + "/")]
        used = sum(entries[path][0] for path in inside)
        used += sum(1 for source in sources if _under(source, directory + "/"))
        if used < 2 or _under(directory, cwd) or _under(cwd, directory) or any(
                _under(place, directory) or _under(directory, place) for place in writable):
            continue
        total = _count_files(directory, limit=2 * used)
        if total is not None and 2 * used > total:
            for path in inside:
                del entries[path]
            sources = {source for source in sources if not _under(source, directory + "/")}
            entries[directory + "/"] = (used, total)
    result = []
    for path, (used, total) in sorted(entries.items()):
        result.append((path, used, total))
    return result


def _source_of(path: str) -> str | None:
    """The module source next to a `__pycache__/NAME.TAG.pyc`, if it exists."""
    directory, name = os.path.split(path)
    if os.path.basename(directory) != "__pycache__" or not name.endswith(".pyc"):
        return None
    source = os.path.join(os.path.dirname(directory), name.split(".", 1)[0] + ".py")
    return source if os.path.isfile(source) else None


def _count_files(directory: str, limit: int) -> int | None:
    """Files Gramine's expansion of `directory/` trusts (readable regular files, not below
    symlinked directories); None once more than `limit` are found."""
    count = 0
    stack = [directory]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=True) and os.access(entry.path, os.R_OK):
                    count += 1
            except OSError:
                continue
            if count > limit:
                return None
    return count


def _files_in(directory: str) -> int:
    try:
        return sum(1 for entry in os.scandir(directory) if entry.is_file(follow_symlinks=True))
    except OSError:
        return 0


# -- writing the template ---------------------------------------------------------------------


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _jinja_safe(line: str) -> str:
    """A line whose text Jinja would read as a tag ({{, {%, {#) is kept verbatim."""
    if any(tag in line for tag in ("{{", "{%", "{#")):
        return "{% raw %}" + line + "{% endraw %}"
    return line


def _size(mib: int) -> str:
    return f"{mib // 1024}G" if mib >= 1024 and mib % 1024 == 0 else f"{mib}M"


def _power_of_two(value: int) -> int:
    result = 1
    while result < value:
        result *= 2
    return result


def enclave_size_mib(peak_mib: int) -> int:
    return max(MIN_ENCLAVE_MIB, _power_of_two(-(-peak_mib * 5 // 4)))


def max_threads(peak: int) -> int:
    return peak + max(2, peak // 2)


def _stack_size(bytes_: int) -> str:
    kib = -(-bytes_ // 1024)
    return f"{kib // 1024}M" if kib % 1024 == 0 else f"{kib}K"


def _command(argv: list[str]) -> str:
    return shlex.join(argv)


def render_template(runs: list[Run]) -> str:
    """The manifest template for `runs` (one or more runs of one program), with the runs
    themselves stored at its end for `pylos trace --append`."""
    merged = merge(runs)
    layout = plan(merged)
    first = merged.first
    out: list[str] = []

    def add(line: str) -> None:
        out.append(_jinja_safe(line))

    commands = []
    for run in merged.runs:
        if run.argv not in commands:
            commands.append(run.argv)
    runs_text = f"{len(merged.runs)} runs" if len(merged.runs) > 1 else "one run"
    add(f"# Manifest template for {_command(commands[0])}")
    add(f"# written by `pylos trace` from {runs_text} on this machine (edit freely: it is a")
    add("# starting point). `pylos trace --append` rewrites it from the runs stored at its end.")
    add("#")
    processes = merged.peak("processes")
    statuses = ", ".join(str(s) for s in sorted({run.exit_status for run in merged.runs}))
    add(f"# Observed: {processes} process{'es' if processes != 1 else ''}, "
        f"{layout.used_files} files read or executed, {layout.written} paths written; "
        f"exit status {statuses}.")
    add("# Build and run it (Gramine's naming: APP.manifest.template -> APP.manifest):")
    add("#   pylos manifest APP.manifest.template APP.manifest && pylos sign -m APP.manifest")
    add("#   pylos run APP")
    add("")
    add("libos.entrypoint = " + _toml(first.entrypoint))
    add("")
    add("# error, warning, debug, trace or all: `pylos manifest -Dlog_level=debug ...`")
    out.append("loader.log_level = \"{{ log_level | default('error') }}\"")
    add("")
    _arguments(add, commands)
    _environment(add, merged)
    _user(add, merged)
    if any(run.handles_sigterm for run in merged.runs):
        add("# The program handles SIGTERM (it installed a handler): a SIGTERM sent to `pylos")
        add("# run` reaches it, for a clean shutdown, instead of ending the enclave.")
        add("sys.enable_sigterm_injection = true")
        add("")
    _filesystem(add, layout)
    _limits(add, merged)
    _network(add, merged, layout)
    _trusted(add, layout)
    _allowed(add, layout)
    _not_covered(add, layout, merged)
    return "\n".join(out) + "\n" + encode_runs(merged.runs)


def _arguments(add, commands: list[list[str]]) -> None:
    if len(commands) == 1:
        add("# Arguments, as traced: part of the measurement, so the host cannot change them.")
        add("# For arguments from the `pylos run` command line instead, replace this line with")
        add("# `loader.insecure__use_cmdline_argv = true` (insecure: the host chooses them).")
        add("loader.argv = [" + ", ".join(_toml(arg) for arg in commands[0]) + "]")
    else:
        add(f"# The traced runs had {len(commands)} different command lines, e.g.:")
        for argv in commands[:5]:
            add(f"#   {_command(argv)}")
        add("# so arguments come from the `pylos run` command line (argv[0] is libos.entrypoint);")
        add("# insecure: the host chooses them. Hard-code one with `loader.argv = [...]`.")
        add("loader.insecure__use_cmdline_argv = true")
    add("")


def _environment(add, merged: Merged) -> None:
    dirs: list[str] = []
    for run in merged.runs:
        dirs += [d for d in run.exec_dirs if d not in dirs]
    add("# Environment: the enclave gets only what is listed here, never the host's variables.")
    if dirs:
        add("# PATH: the directories of the host's PATH that programs were executed from.")
        add("loader.env.PATH = " + _toml(":".join(dirs)))
    add("# Add what else the program needs, e.g. loader.env.LANG = \"C.UTF-8\".")
    add("")


def _user(add, merged: Merged) -> None:
    switched = next((run.user for run in merged.runs if run.user), None)
    if switched is None:
        return
    add(f"# The program switched to uid {switched[0]}, gid {switched[1]} (setuid/setgid). The")
    add("# enclave has a single user, so it starts as that user and needs no switch.")
    add(f"loader.uid = {switched[0]}")
    add(f"loader.gid = {switched[1]}")
    add("")


def _filesystem(add, layout: Layout) -> None:
    add("# File system: an empty, read-only root; each host path used is mounted at its own")
    add("# path (read-only: sgx.allowed_files below are the writable ones).")
    add('fs.root.type = "tmpfs"')
    if layout.start_dir is not None:
        add("# the working directory of the traced run")
        add("fs.start_dir = " + _toml(layout.start_dir))
    add("fs.mounts = [")
    for mount in layout.mounts:
        add(f"  {{ path = {_toml(mount)}, uri = {_toml('file:' + mount)} }},")
    for root in sorted(layout.tmpfs):
        add(f"  # written under {root} natively: enclave memory, empty at start, gone at exit.")
        add(f'  # To keep the files, sealed: {{ type = "encrypted", path = {_toml(root)}, '
            f'uri = "file:DIR", key_name = "..." }}')
        add(f'  {{ type = "tmpfs", path = {_toml(root)} }},')
    add("]")
    add("")


def _limits(add, merged: Merged) -> None:
    threads = merged.peak("peak_threads")
    peak_mib = merged.peak("peak_address_space_mib")
    size = enclave_size_mib(peak_mib)
    add(f"# Threads: at most {threads} at a time in one process (main thread included); room")
    add("# for a few more. Each process of the enclave has this limit.")
    add(f"sgx.max_threads = {max_threads(threads)}")
    add("")
    add(f"# Memory: the largest address space of a process was {peak_mib} MiB (VmPeak); the")
    add(f"# enclave size is the power of two at or above 1.25 times that (at least "
        f"{MIN_ENCLAVE_MIB}M).")
    add(f"sgx.enclave_size = \"{_size(size)}\"")
    add("")
    stack_kib = merged.peak("peak_stack_kib")
    limits = [run.stack_limit for run in merged.runs if run.stack_limit]
    if limits:
        add(f"# Stack: the program set RLIMIT_STACK to {_stack_size(max(limits))} itself.")
        add(f"sys.stack.size = \"{_stack_size(max(limits))}\"")
    elif stack_kib > STACK_GROWN_KIB:
        wanted = _power_of_two(2 * stack_kib)
        add(f"# Stack: the main thread's stack grew to {stack_kib} KiB (VmStk); twice that,")
        add("# as a power of two (the default is 256K; threads get this size too).")
        add(f"sys.stack.size = \"{_stack_size(wanted * 1024)}\"")
    else:
        add(f"# Stack: the main thread's stack peaked at {stack_kib} KiB (VmStk), within the")
        add(f"# {DEFAULT_STACK_KIB}K default of sys.stack.size (also glibc's thread stack size;")
        add("# how deep threads went is not observable).")
    add("")


def _network(add, merged: Merged, layout: Layout) -> None:
    lines = sorted({line for run in merged.runs for line in run.network})
    if not lines and not layout.dns:
        return
    add("# Network (no key needed: the enclave uses the host's network):")
    for line in lines[:20]:
        add(f"#   {line}")
    if len(lines) > 20:
        add(f"#   ... and {len(lines) - 20} more")
    if layout.dns:
        add("# The program read /etc/resolv.conf (name resolution): pylos provides a sanitized")
        add("# copy of the host's.")
        add("sys.enable_extra_runtime_domain_names_conf = true")
    add("")


def _trusted(add, layout: Layout) -> None:
    add("# Trusted files: what the run read, executed or mapped (hashed into the measurement;")
    add("# a file changed on the host is refused). A directory entry (`dir/`) stands for every")
    add("# file below it; it is used where the run used more than half of them.")
    add("sgx.trusted_files = [")
    group = None
    cwd = layout.start_dir or "/"
    for uri, used, total in layout.trusted_entries:
        if uri.endswith("/"):
            group = None
            add(f"  # {uri}: {used} of {total} files used")
            add(f"  {_toml('file:' + uri)},")
            continue
        parent = os.path.dirname(uri)
        if parent != group:
            group = parent
            in_group = sum(1 for u, _, _ in layout.trusted_entries
                           if not u.endswith("/") and os.path.dirname(u) == parent)
            if cwd != "/" and _under(parent, cwd):  # the application's files change
                add(f"  # {parent}/: {in_group} file{'s' if in_group != 1 else ''}")
            else:
                add(f"  # {parent}/: {in_group} of {_files_in(parent)} files")
        add(f"  {_toml('file:' + uri)},")
    add("]")
    add("")


def _allowed(add, layout: Layout) -> None:
    if not layout.allowed_dirs and not layout.allowed_files:
        return
    add("# Allowed files: written by the run (read-write, not verified: the host can change")
    add("# them). A directory allows everything below it; one the run created is made at start.")
    add("sgx.allowed_files = [")
    for path in sorted(layout.allowed_dirs):
        add(f"  {_toml('file:' + path.rstrip('/') + '/')},")
    for path in sorted(layout.allowed_files):
        add(f"  {_toml('file:' + path)},")
    add("]")
    add("")


def _not_covered(add, layout: Layout, merged: Merged) -> None:
    notes = []
    for path in sorted(layout.refused_writes):
        notes.append(f"written natively, left read-only (a system directory): {path}")
    unprovided = sorted(path for path in layout.provided
                        if (_under(path, "/dev") and not any(
                            _under(path, p.rstrip("/")) for p in PROVIDED_DEV))
                        or (_under(path, "/sys") and not any(_under(path, p)
                                                             for p in PROVIDED_SYS)))
    for path in unprovided:
        notes.append(f"used natively, not in the enclave: {path}")
    probes = max(run.probes for run in merged.runs)
    roots = sorted({root for root in PROVIDED
                    if any(_under(p, root) for p in layout.provided)})
    if roots:
        notes.append(f"{', '.join(roots)}: the enclave's own (not mounted from the host)")
    if probes:
        notes.append(f"{probes} paths looked for but missing (library and module searches): "
                     "missing in the enclave too")
    if not notes:
        return
    add("# Not in this manifest:")
    for note in notes:
        add(f"#   {note}")
    add("")
