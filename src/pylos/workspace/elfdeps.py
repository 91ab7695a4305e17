"""Shared-library dependencies of an ELF file, found by reading it (never by running it).

Occlum's copy_bom runs `<loader> --list <file>`, which executes the loader on the host. pylos
reads the ELF instead (pyelftools) and repeats the dynamic loader's search itself:
PT_INTERP, then for each DT_NEEDED name DT_RPATH (only without DT_RUNPATH, and inherited from
the objects that loaded it), DT_RUNPATH, the directories of /etc/ld.so.conf (with its
`include` lines), then the loader's built-in directories. `$ORIGIN`, `$LIB` and `$PLATFORM`
are expanded as ld.so does on x86-64. A candidate of another ELF class or machine is skipped,
as the loader skips it.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from pylos.errors import PylosError

# glibc's built-in search path on x86-64 Debian/Ubuntu (multiarch first), then the classic ones.
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")


@dataclass(frozen=True)
class ElfInfo:
    elf_class: int
    machine: str
    interp: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]


def read_elf(path: str) -> ElfInfo | None:
    """The dynamic-linking facts of `path`; None when it is not an ELF executable/library."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
                return None
            interp = None
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP":
                    interp = segment.get_interp_name()
            needed: list[str] = []
            rpath: list[str] = []
            runpath: list[str] = []
            for section in elf.iter_sections():
                if not isinstance(section, DynamicSection):
                    continue
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_RPATH":
                        rpath.extend(p for p in tag.rpath.split(":") if p)
                    elif tag.entry.d_tag == "DT_RUNPATH":
                        runpath.extend(p for p in tag.runpath.split(":") if p)
            return ElfInfo(elf.elfclass, elf["e_machine"], interp, tuple(needed), tuple(rpath),
                           tuple(runpath))
    except (OSError, ELFError, ValueError, KeyError) as exc:
        if isinstance(exc, OSError) and not os.path.exists(path):
            raise PylosError(f"cannot read '{path}': {exc.strerror}") from None
        return None  # a damaged or exotic ELF: not something the loader would map either


def ld_so_conf_dirs(path: str = "/etc/ld.so.conf", seen: set[str] | None = None) -> list[str]:
    """Directories listed in ld.so.conf, following `include` globs, in order."""
    seen = seen if seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    try:
        lines = open(path).read().splitlines()  # noqa: SIM115
    except OSError:
        return []
    dirs: list[str] = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include "):
            pattern = line.split(None, 1)[1].strip()
            if not pattern.startswith("/"):
                pattern = os.path.join(os.path.dirname(path), pattern)
            for included in sorted(glob.glob(pattern)):
                dirs.extend(ld_so_conf_dirs(included, seen))
        elif line.startswith("/"):
            dirs.append(line.split("=", 1)[0].rstrip("/") or "/")
    return dirs


def _expand(entry: str, origin: str) -> str:
    for token in ("${ORIGIN}", "$ORIGIN"):
        entry = entry.replace(token, origin)
    for token in ("${LIB}", "$LIB"):
        entry = entry.replace(token, "lib64")
    for token in ("${PLATFORM}", "$PLATFORM"):
        entry = entry.replace(token, "x86_64")
    return entry


@dataclass
class Dependencies:
    """What an ELF needs at run time: the loader (host path, PT_INTERP) and libraries."""

    interp: str | None = None
    interp_host: str | None = None
    libraries: dict[str, str] = field(default_factory=dict)  # host path -> search kind
    missing: list[tuple[str, str]] = field(default_factory=list)  # (needed name, needed by)


class Resolver:
    """Resolves dependencies against the host; results are cached per file."""

    def __init__(self, conf_dirs: list[str] | None = None) -> None:
        self.conf_dirs = conf_dirs if conf_dirs is not None else ld_so_conf_dirs()
        self._info: dict[str, ElfInfo | None] = {}

    def info(self, path: str) -> ElfInfo | None:
        if path not in self._info:
            self._info[path] = read_elf(path)
        return self._info[path]

    def _matches(self, path: str, want: ElfInfo) -> bool:
        info = self.info(path) if os.path.isfile(path) else None
        return info is not None and (info.elf_class, info.machine) == (want.elf_class,
                                                                       want.machine)

    def _find(self, name: str, loader_rpaths: list[str], obj: ElfInfo,
              origin: str) -> tuple[str, str] | None:
        if "/" in name:
            return (name, "path") if self._matches(name, obj) else None
        search: list[tuple[str, str]] = []
        if not obj.runpath:
            search += [(_expand(d, origin), "rpath") for d in (*obj.rpath, *loader_rpaths)]
        search += [(_expand(d, origin), "runpath") for d in obj.runpath]
        search += [(d, "conf") for d in self.conf_dirs]
        search += [(d, "default") for d in DEFAULT_DIRS]
        for directory, kind in search:
            candidate = os.path.join(directory, name)
            if self._matches(candidate, obj):
                return os.path.normpath(candidate), kind
        return None

    def find(self, name: str, loaded_by: str) -> str | None:
        """Where the loader finds library `name` when the ELF at `loaded_by` dlopens it
        (that object's DT_RPATH/DT_RUNPATH, then ld.so.conf and the built-in directories)."""
        info = self.info(loaded_by)
        if info is None:
            return None
        found = self._find(name, [], info, os.path.dirname(os.path.abspath(loaded_by)))
        return found[0] if found else None

    def resolve(self, path: str) -> Dependencies | None:
        """Dependencies of the ELF at host path `path`; None when it is not a dynamic ELF."""
        top = self.info(path)
        if top is None:
            return None
        deps = Dependencies(interp=top.interp)
        if top.interp is not None:
            if not os.path.isfile(top.interp):
                deps.missing.append((top.interp, path))
            else:
                deps.interp_host = top.interp
        # Breadth-first as ld.so loads; DT_RPATH of the loading chain is inherited.
        queue: list[tuple[str, ElfInfo, list[str]]] = [(path, top, [])]
        seen = {os.path.realpath(path)}
        while queue:
            current, info, inherited = queue.pop(0)
            origin = os.path.dirname(os.path.abspath(current))
            chain = [*info.rpath, *inherited] if not info.runpath else inherited
            for name in info.needed:
                found = self._find(name, inherited, info, origin)
                if found is None:
                    deps.missing.append((name, current))
                    continue
                lib, kind = found
                real = os.path.realpath(lib)
                if real in seen or (deps.interp_host and real == os.path.realpath(
                        deps.interp_host)):
                    continue
                seen.add(real)
                deps.libraries[lib] = kind
                lib_info = self.info(lib)
                if lib_info is not None:
                    queue.append((lib, lib_info, [_expand(d, origin) for d in chain]))
        return deps
