"""What a traced Python app needs in its enclave: exactly the files it loaded, grouped by where
they come from (interpreter, glibc, shared libraries, standard library, each distribution, the
app), and the mounts that make them visible at their own paths.

Trusted: every module file the native run imported (`.py` and its `.pyc`, extension modules,
sourceless `.pyc`, zip archives), every file it read and never wrote, the `.pth` files `site`
reads at start, the venv's `pyvenv.cfg`, the interpreter and the shared libraries it and the
extension modules link (ELF `DT_NEEDED`, resolved as ld.so does). Not the whole RECORD of a
distribution: numpy's has ~1000 files (tests, f2py, typing stubs) the app never loads, and
"exactly what the app imports" is the point. Distributions' RECORDs (importlib.metadata) only
say which distribution each file belongs to.

Mounted: the directories holding those files, at their host paths, collapsed to the outermost
(so the import system walks the packages as on the host; their other files are visible but
refused when opened). The interpreter and `pyvenv.cfg` are mounted one by one, as Gramine's
python example mounts its entrypoint, and so is any file directly below `/` or a top-level
directory (`/etc/hosts`, not all of `/etc`). Symbolic links are followed hop by hop, and the
directory of each hop is mounted too (Debian's `/etc/alternatives` links, a package directory
linked from elsewhere): in the enclave they resolve within the view.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from pylos.pyapp.trace import Distribution, Trace
from pylos.workspace.elfdeps import Resolver

# Where ld.so looks by itself, without /etc/ld.so.cache (which the enclave does not have):
# its system search path minus /lib, which holds gramine.runtimedir() in the enclave.
LOADER_SYSTEM_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib")

# glibc dlopens it to unwind a thread cancelled or ended by pthread_exit: the trace cannot
# see it (no Python code asks for it), the enclave needs it then.
LIBGCC_S = "libgcc_s.so.1"


@dataclass
class Group:
    """Trusted files from one origin: a short label, the comment the manifest gives them."""

    label: str
    comment: str = ""
    paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mount:
    path: str
    directory: bool


@dataclass
class Plan:
    trace: Trace
    glibc: list[str]  # file names in gramine.runtimedir(), mounted at /lib
    groups: list[Group]
    mounts: list[Mount]
    library_path: list[str]  # loader.env.LD_LIBRARY_PATH
    uncompiled: list[str]  # source modules without a .pyc Python can use: compiled each start
    missing_libraries: list[tuple[str, str]]  # (needed name, needed by)

    @property
    def trusted_count(self) -> int:
        return len(self.glibc) + sum(len(group.paths) for group in self.groups)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _hops(path: str) -> list[str]:
    """`path` and every path its final-component symbolic links lead to, in order."""
    chain = [path]
    while os.path.islink(chain[-1]) and len(chain) < 40:
        target = os.readlink(chain[-1])
        chain.append(os.path.normpath(os.path.join(os.path.dirname(chain[-1]), target)))
    return chain


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


class _Collector:
    """Trusted files by real path, each with the first group key given, and the paths (as
    the program names them) the view must resolve."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.named: dict[str, str] = {}  # real path -> a name the program uses for it
        self.view_paths: list[str] = []

    def add(self, named: str, key: str = "") -> None:
        real = os.path.realpath(named)
        if real not in self.keys:
            self.keys[real] = key
            self.named[real] = os.path.normpath(named)
        self.view_paths.append(os.path.normpath(named))


def _distribution_of(dists: list[Distribution]):
    by_file: dict[str, Distribution] = {}
    by_top: list[tuple[str, Distribution]] = []  # (location/top-level name, dist)
    for dist in dists:
        if dist.files is not None:
            for path in dist.files:
                by_file.setdefault(os.path.normpath(path), dist)
        elif dist.metadata_dir:
            location = os.path.dirname(dist.metadata_dir)
            by_top += [(os.path.join(location, top), dist) for top in dist.top_level]

    def lookup(*paths: str) -> Distribution | None:
        for path in paths:
            if path in by_file:
                return by_file[path]
        for path in paths:
            # A top-level module's file: NAME.py, NAME.<tag>.so, __pycache__/NAME.<tag>.pyc.
            directory, name = os.path.split(path)
            if os.path.basename(directory) == "__pycache__":
                directory = os.path.dirname(directory)
            module = os.path.join(directory, name.split(".", 1)[0])
            for top, dist in by_top:
                if _under(path, top) or module == top:
                    return dist
        return None

    return lookup


def build_plan(trace: Trace, glibc_names: set[str], resolver: Resolver | None = None) -> Plan:
    """The trusted files and mounts for `trace`; `glibc_names` are the files of
    gramine.runtimedir(), which the enclave loads from /lib in place of the host's."""
    resolver = resolver or Resolver()
    files = _Collector()
    venv = trace.venv
    interpreter = os.path.realpath(venv.python)
    files.add(str(venv.python), "interpreter")
    files.add(str(venv.config), "interpreter")

    uncompiled: list[str] = []
    elf_objects = [interpreter]
    for module in trace.modules:
        if module.archive:
            files.add(module.archive)
            continue
        files.add(module.origin)
        if module.cached and module.pyc in ("valid", "unchecked"):
            files.add(module.cached)
        elif module.cached:
            uncompiled.append(module.origin)
        if not module.origin.endswith((".py", ".pyc")):
            elf_objects.append(module.origin)
    for path in trace.files_read:
        files.add(path)
    for site_dir in trace.site_packages:
        for pth in sorted(glob.glob(os.path.join(glob.escape(site_dir), "*.pth"))):
            files.add(pth)
    files.add(str(trace.app), "app")
    for name in trace.dlopened:
        found = name if "/" in name else resolver.find(name, interpreter)
        if found and os.path.isfile(found):
            files.add(found)
            elf_objects.append(found)

    glibc: set[str] = set()
    library_path: list[str] = ["/lib"]
    missing: list[tuple[str, str]] = []
    libgcc = resolver.find(LIBGCC_S, interpreter)
    libraries: list[tuple[str, str]] = [(libgcc, "default")] if libgcc else []
    for obj in dict.fromkeys(elf_objects):
        deps = resolver.resolve(obj)
        if deps is None:
            continue
        if deps.interp and os.path.basename(deps.interp) in glibc_names:
            glibc.add(os.path.basename(deps.interp))
        elif deps.interp_host:
            files.add(deps.interp_host, "libraries")
        libraries += deps.libraries.items()
        missing += deps.missing
    for lib, kind in libraries:
        name = os.path.basename(lib)
        if name in glibc_names:
            glibc.add(name)
            continue
        files.add(lib, "libraries")
        # Only what ld.so would not find by itself: LD_LIBRARY_PATH comes before DT_RUNPATH,
        # and more directories there would let it pick other copies than natively.
        directory = os.path.dirname(lib)
        if (kind in ("conf", "default") and directory not in LOADER_SYSTEM_DIRS
                and directory not in library_path):
            library_path.append(directory)

    groups = _group(trace, files)
    mounts = _mounts(files.view_paths, per_file=[str(venv.python), str(venv.config)])
    return Plan(trace, sorted(glibc), groups, mounts, library_path, sorted(uncompiled),
                sorted(set(missing)))


def _group(trace: Trace, files: _Collector) -> list[Group]:
    lookup = _distribution_of(trace.distributions)
    base = os.path.realpath(trace.base_prefix)
    stdlib_dirs = [os.path.realpath(p) for p in trace.sys_path
                   if p and _under(os.path.realpath(p), base)]
    site_dirs = [os.path.realpath(p) for p in trace.site_packages]
    app_dir = os.path.realpath(os.path.dirname(trace.app))
    interpreter = Group("interpreter", f"The interpreter ({trace.venv.python} -> "
                        f"{os.path.realpath(trace.venv.python)}) and the venv's pyvenv.cfg")
    libraries = Group("libraries", "Shared libraries the interpreter and the extension modules "
                      f"link (ELF DT_NEEDED, as ld.so resolves them), and {LIBGCC_S}, which "
                      "glibc loads to unwind an ending thread")
    stdlib = Group("standard library")
    by_dist: dict[tuple[str, str], Group] = {}
    site = Group("site-packages", "Files in site-packages outside any distribution's RECORD "
                 "(the .pth files site reads at start, ...)")
    app = Group("app", f"The app and what it read from its directory ({app_dir})")
    other = Group("other", "Other files the app read")
    for real, key in sorted(files.keys.items()):
        named = files.named[real]
        if key == "interpreter":
            interpreter.paths.append(real)
        elif key == "app":
            app.paths.append(real)
        elif (dist := lookup(named, real)) is not None:
            group = by_dist.setdefault((dist.name, dist.version),
                                       Group(f"{dist.name} {dist.version}"))
            group.paths.append(real)
        elif key == "libraries":
            libraries.paths.append(real)
        elif any(_under(real, d) for d in stdlib_dirs):
            stdlib.paths.append(real)
        elif any(_under(real, d) for d in site_dirs):
            site.paths.append(real)
        elif _under(real, app_dir):
            app.paths.append(real)
        else:
            other.paths.append(real)
    stdlib_dir = next((d for d in stdlib_dirs if os.path.isdir(d)), base)
    stdlib.comment = (f"The standard library ({stdlib_dir}): the modules the app "
                      "imported, directly or through its packages, and what the interpreter "
                      "imports at start (encodings, site, ...)")
    groups = [interpreter, libraries, stdlib]
    dists = {(d.name, d.version): d for d in trace.distributions}
    for (name, version), group in sorted(by_dist.items(), key=lambda item: item[0][0].lower()):
        record = dists[(name, version)].files
        of = f" of the {len(record)} in its RECORD" if record is not None else ""
        group.comment = (f"Distribution {name} {version}: the {len(group.paths)} files the app "
                         f"loaded{of}")
        groups.append(group)
    groups += [site, app, other]
    return [group for group in groups if group.paths]


def _collapse(directories: set[str]) -> list[str]:
    kept: list[str] = []
    for directory in sorted(directories):
        if not any(_under(directory, outer) for outer in kept):
            kept.append(directory)
    return kept


def _mounts(view_paths: list[str], per_file: list[str]) -> list[Mount]:
    directories: set[str] = set()
    # Each hop of the interpreter's links (venv/bin/python -> python3.11 -> the base
    # interpreter) is mounted by itself where no mounted directory holds it.
    single = {hop for named in per_file for hop in _hops(named)}
    hops = [hop for named in dict.fromkeys(view_paths) if named not in per_file
            for hop in _hops(named)]
    for hop in hops:
        if _depth(os.path.dirname(hop)) >= 2:
            directories.add(os.path.dirname(hop))
        else:
            single.add(hop)
    # A directory symlink inside a mounted tree may lead out of it (a package directory
    # linked from elsewhere): the place it leads to is mounted too, until nothing escapes.
    while True:
        kept = _collapse(directories)
        escaped = set()
        for hop in hops:
            outer = next((m for m in kept if _under(hop, m)), None)
            real = os.path.realpath(hop)
            if outer is not None and not _under(real, os.path.realpath(outer)):
                if _depth(os.path.dirname(real)) >= 2:
                    escaped.add(os.path.dirname(real))
                else:
                    single.add(real)
        if escaped <= directories:
            break
        directories |= escaped
    mounts = [Mount(d, True) for d in kept]
    mounts += [Mount(f, False) for f in sorted(single)
               if not any(_under(f, outer) for outer in kept)]
    return sorted(mounts, key=lambda m: m.path)
