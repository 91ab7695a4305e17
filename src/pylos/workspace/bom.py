"""Occlum's bill-of-materials files (`copy_bom`): parse, plan every operation, then apply.

The whole plan is made before the image is touched: a missing source, a hash mismatch, an
include cycle, an unknown key, a destination leaving the root or a missing library of a
`files` entry stops `copy-bom` with an error naming the bom and the entry, and the image stays
as it was. Applying is incremental: a file whose destination already has the source's size
and modification time is not copied again (copies keep the source's mtime). Files are
written to a temporary name and renamed, so an interrupted run never leaves a torn file.

Semantics follow Occlum's copy_bom (docs/occlum.md): relative sources are joined to the
parent of `--root`, includes are found next to the including bom or in an include dir and
applied before it, each bom runs mkdirs -> createlinks -> dirs -> files -> libraries, for one
destination the first mkdir and the last link or file win, `dir/` copies the contents of
`dir`, symlinks inside a copied directory are kept and links leaving it are replaced by what
they point to. Dependencies of ELF files come from `elfdeps` (read, never executed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylos.errors import InputError, PylosError
from pylos.workspace.elfdeps import DEFAULT_DIRS, Resolver

MAX_BOMS = 100
NAME_MAX = 255  # bytes of one path component (Linux)
PATH_MAX = 4096  # bytes of a path, with its NUL (Linux)
HASH = re.compile(r"^[0-9A-F]{64}$")
TOP_KEYS = {"includes", "excludes", "targets"}
TARGET_KEYS = {"target", "mkdirs", "createlinks", "copy"}
LINK_KEYS = {"src", "linkname"}
COPY_KEYS = {"from", "dirs", "files"}
FILE_KEYS = {"name", "hash", "autodep", "rename"}
OCCLUM_GLIBC = "/opt/occlum/glibc/lib/"
TEMPLATES = Path(__file__).parent / "templates"


def default_include_dirs() -> list[Path]:
    """The templates shipped with pylos (Occlum's /opt/occlum/etc/template)."""
    return [TEMPLATES]


@dataclass
class Op:
    """One planned change of the image: `dest` is an absolute path inside it."""

    kind: str  # "mkdir", "link", "copy"
    dest: str
    source: str | None = None  # copy: host file; link: the link's text
    origin: str = ""  # which bom entry asked for it (for messages)
    unchanged: bool = False

    def describe(self) -> str:
        if self.kind == "mkdir":
            return f"mkdir     {self.dest}"
        if self.kind == "link":
            return f"link      {self.dest} -> {self.source}"
        state = "unchanged" if self.unchanged else "copy"
        return f"{state:<10}{self.source} -> {self.dest}"


@dataclass
class Plan:
    root: Path
    ops: dict[str, Op] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    inside: set[str] = field(default_factory=set)  # every directory something is planned in

    def add(self, op: Op) -> None:
        previous = self.ops.get(op.dest)
        if op.kind == "mkdir" and previous is not None:
            return  # the first mkdir wins; an existing link or file stays
        if previous is not None:
            del self.ops[previous.dest]  # the last link/file wins, in its own position
        self.ops[op.dest] = op
        self.inside.update(_ancestors(op.dest))

    def summary(self) -> str:
        copies = [o for o in self.ops.values() if o.kind == "copy"]
        fresh = sum(1 for o in copies if not o.unchanged)
        return (f"{len(self.ops)} operations: {fresh} files to copy, "
                f"{len(copies) - fresh} unchanged")


def _ancestors(dest: str) -> list[str]:
    """The directories above in-image path `dest`, `/` excluded: /a/b/c -> /a, /a/b."""
    parts = dest.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _short(value: object) -> str:
    """`value`'s repr for a message, cut short: the message stays one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def check_path(path: str, where: str) -> str:
    """`path` if the kernel can take it: no NUL byte, encodable, not too long; else an
    InputError naming the bom entry (never an OSError or ValueError later, mid-plan)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        raise InputError(f"{where}: {_short(path)} cannot be a file name (it holds a lone "
                         "surrogate code point)") from None
    if b"\0" in raw:
        raise InputError(f"{where}: {_short(path)} contains a NUL byte")
    longest = max(len(part) for part in raw.split(b"/"))
    if len(raw) >= PATH_MAX or longest > NAME_MAX:
        raise InputError(f"{where}: path too long ({len(raw)} bytes, longest component "
                         f"{longest}; Linux allows {PATH_MAX - 1} and {NAME_MAX}): "
                         f"{_short(path)}")
    return path


def _inside(target: str, name: str, where: str) -> str:
    """`target/name` as an absolute in-image path; refuses anything that climbs above `/`."""
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: expected a non-empty path, got {_short(name)}")
    check_path(name, where)
    parts: list[str] = []
    for part in f"{target}/{name}".split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InputError(f"{where}: '{target}' + '{name}' leaves the image root")
            parts.pop()
        else:
            parts.append(part)
    return check_path("/" + "/".join(parts), where)


VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_vars(text: str, where: str) -> str:
    """`$VAR` / `${VAR}` from the environment, as copy_bom does; an unset one is an error
    (left as it is, it would only surface as a confusing missing path)."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise InputError(f"{where}: environment variable ${name} (in {_short(text)}) is "
                             "not set")
        return os.environ[name]

    return VARIABLE.sub(value, text)


def _check_keys(value: Any, allowed: set[str], where: str) -> None:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping, got {_short(value)}")
    for key in value:
        if key not in allowed:
            raise InputError(f"{where}.{key}: unknown key (expected one of "
                             f"{', '.join(sorted(allowed))})")


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list, got {_short(value)}")
    return value


def _yaml_message(exc: Exception) -> str:
    """A YAML error on one line: where, then what (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (f"{context}: " if context else "") + " ".join(problem.split())


def _load_bom(path: Path) -> dict:
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read bom '{path}': {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw.decode())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: invalid YAML: not UTF-8 text (byte {exc.start} is "
                         f"{raw[exc.start]:#04x})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {_yaml_message(exc)}") from None
    except RecursionError:
        raise InputError(f"{path}: invalid YAML for a bom: lists or mappings nested too deeply"
                         ) from None
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        # PyYAML's constructors fail so on a scalar that does not fit its explicit tag
        # (`!!timestamp x`, `!!bool x`, `!!int ''`), or a date that does not exist.
        raise InputError(f"{path}: invalid YAML for a bom: a value does not fit its type "
                         f"({type(exc).__name__}: {exc})") from None
    data = {} if data is None else data
    _check_keys(data, TOP_KEYS, str(path))
    return data


def _find_include(name: str, including: Path, include_dirs: list[Path]) -> Path:
    check_path(name, f"{including}: includes")
    for directory in [including.parent, *include_dirs]:
        candidate = directory / name
        try:
            found = candidate.is_file()
        except OSError:  # e.g. the joined path is too long: no bom there
            found = False
        if found:
            return candidate.resolve()
    searched = ", ".join(str(d) for d in [including.parent, *include_dirs])
    raise InputError(f"bom '{including}': included bom '{name}' not found (searched {searched})")


def ordered_boms(top: Path, include_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """Every bom to apply, includes before the boms that include them; cycles are errors."""
    loaded: dict[Path, dict] = {}
    order: list[Path] = []

    def visit(path: Path, stack: list[Path]) -> None:
        if path in stack:
            cycle = " -> ".join(p.name for p in [*stack[stack.index(path):], path])
            raise InputError(f"bom include cycle: {cycle}")
        if path in loaded:
            return
        if len(loaded) >= MAX_BOMS:
            raise InputError(f"more than {MAX_BOMS} boms included from '{top}'")
        data = _load_bom(path)
        loaded[path] = data
        for i, name in enumerate(_list(data.get("includes"), f"{path}: includes")):
            if not isinstance(name, str):
                raise InputError(f"{path}: includes[{i}]: expected a file name, got "
                                 f"{_short(name)}")
            visit(_find_include(name, path, include_dirs), [*stack, path])
        order.append(path)

    if not top.is_file():
        raise PylosError(f"bom file '{top}' does not exist")
    visit(top.resolve(), [])
    return [(path, loaded[path]) for path in order]


class Planner:
    def __init__(self, root: Path, include_dirs: list[Path],
                 resolver: Resolver | None = None) -> None:
        self.root = root.absolute()
        self.base = self.root.parent  # relative sources are joined to the parent of --root
        self.include_dirs = include_dirs
        self.resolver = resolver or Resolver()
        self.plan = Plan(self.root)
        self._required_libs: list[tuple[str, str]] = []  # (missing name, where)

    # ---- sources ----------------------------------------------------------------------
    def source(self, prefix: str | None, name: str, where: str) -> str:
        name = expand_vars(name, where)
        if prefix is not None:
            prefix = expand_vars(prefix, where)
            path = os.path.join(prefix, name)
        else:
            path = name
        if not path.startswith("/"):
            path = os.path.join(self.base, path)
        path = os.path.normpath(path) + ("/" if name.endswith("/") else "")
        check_path(path, where)
        if path.startswith(OCCLUM_GLIBC) and not os.path.exists(path):
            host = self._host_glibc(path[len(OCCLUM_GLIBC):])
            if host is None:
                raise InputError(f"{where}: '{path}' is part of Occlum's own glibc, which pylos "
                                 "does not use, and the host has no library of that name (pylos "
                                 "runs the host's glibc)")
            return host
        if path.startswith("/opt/occlum/") and not os.path.exists(path):
            raise InputError(f"{where}: '{path}' is an Occlum installation path; pylos has no "
                             "/opt/occlum (use the host's files instead)")
        if not os.path.lexists(path.rstrip("/") or "/"):
            raise InputError(f"{where}: source '{path}' does not exist")
        return path

    @staticmethod
    def _host_glibc(name: str) -> str | None:
        for directory in DEFAULT_DIRS:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                return candidate
        return None

    # ---- destinations -----------------------------------------------------------------
    def host_of(self, dest: str) -> Path:
        return self.root / dest.lstrip("/") if dest != "/" else self.root

    def _link_text(self, path: str) -> str | None:
        """The target of a symlink at in-image `path`: planned by this bom, or on disk."""
        op = self.plan.ops.get(path)
        if op is not None:
            return op.source if op.kind == "link" else None
        host = self.host_of(path)
        try:
            return os.readlink(host) if host.is_symlink() else None
        except OSError:  # too long a path to be a link; resolve_dest then refuses it
            return None

    def resolve_dest(self, dest: str, where: str) -> str:
        """`dest` with the symlinks of its directories resolved *inside the image*, as the
        enclave will see them (absolute link targets start at the image root, `..` stops at
        it): a write never follows a link onto the host, and images whose /lib is a link to
        usr/lib still get their libraries where the enclave looks for them."""
        parts = [p for p in dest.split("/") if p]
        todo, last = parts[:-1], parts[-1:] if parts else []
        resolved: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            if part == ".":
                continue
            target = self._link_text("/" + "/".join([*resolved, part]))
            if target is None:
                resolved.append(part)
                continue
            hops += 1
            if hops > 40:
                raise InputError(f"{where}: too many levels of symbolic links under '{dest}' "
                                 "in the image")
            if target.startswith("/"):
                resolved = []
            todo = [p for p in target.split("/") if p] + todo
        result = "/" + "/".join([*resolved, *last])
        check_path(str(self.host_of(result)), where)
        return result

    def check_dest(self, dest: str, kind: str, where: str) -> None:
        """Refuse, at planning time, what applying would fail on: a file or link as the image
        root or where directories are planned, anything inside a file (planned or in the
        image)."""
        if kind != "mkdir":
            if dest == "/":
                raise InputError(f"{where}: cannot put a {kind} at the image root itself")
            if dest in self.plan.inside:
                raise InputError(f"{where}: cannot put a {kind} at '{dest}': the bom puts files "
                                 "inside it (a directory)")
        for directory in _ancestors(dest):
            op = self.plan.ops.get(directory)
            if op is not None and op.kind == "copy":
                raise InputError(f"{where}: '{dest}' would be inside '{directory}', a file "
                                 f"({op.origin})")
            host = self.host_of(directory)
            if os.path.lexists(host) and not host.is_dir():
                raise InputError(f"{where}: '{dest}' would be inside '{directory}', which is "
                                 "a file in the image")

    def mkdir(self, dest: str, where: str) -> None:
        dest = self.resolve_dest(f"{dest}/.", where).removesuffix("/.") or "/"  # mkdir -p
        host = self.host_of(dest)
        if os.path.lexists(host) and not host.is_dir():
            raise InputError(f"{where}: cannot create directory '{dest}': a file exists there")
        self.check_dest(dest, "mkdir", where)
        self.plan.add(Op("mkdir", dest, origin=where, unchanged=host.is_dir()))

    def copy_file(self, source: str, dest: str, where: str, expected: str | None = None,
                  autodep: bool = True, strict_deps: bool = True) -> None:
        dest = self.resolve_dest(dest, where)
        real = os.path.realpath(source)  # rsync -L: the file the link points to
        if not os.path.isfile(real):
            raise InputError(f"{where}: source '{source}' is not a regular file")
        if expected is not None:
            try:
                with open(real, "rb") as f:
                    actual = hashlib.file_digest(f, "sha256").hexdigest().upper()
            except OSError as exc:
                raise PylosError(f"{where}: cannot read '{source}': {exc.strerror}") from None
            if actual != expected:
                raise InputError(f"{where}: hash mismatch for '{source}': the bom says "
                                 f"{expected}, the file's SHA-256 is {actual}")
        host = self.host_of(dest)
        if host.is_dir() and not host.is_symlink():
            raise InputError(f"{where}: cannot copy '{source}' to '{dest}': a directory exists "
                             "there")
        self.check_dest(dest, "file", where)
        try:
            st = os.stat(real)
        except OSError as exc:  # it vanished since isfile()
            raise PylosError(f"{where}: cannot read '{source}': {exc.strerror}") from None
        unchanged = False
        try:
            dst = os.lstat(host)
            unchanged = (stat.S_ISREG(dst.st_mode) and dst.st_size == st.st_size
                         and dst.st_mtime_ns == st.st_mtime_ns)
        except OSError:
            pass
        self.plan.add(Op("copy", dest, real, where, unchanged))
        if autodep:
            self.autodep(real, where, strict_deps)

    def autodep(self, path: str, where: str, strict: bool) -> None:
        deps = self.resolver.resolve(path)
        if deps is None:
            return
        if deps.interp is not None and deps.interp_host is not None:
            self.copy_file(deps.interp_host, deps.interp, f"{where} (loader of {path})",
                           autodep=False)
        loader_dir = (os.path.dirname(os.path.realpath(deps.interp_host))
                      if deps.interp_host else "/lib")
        for lib, kind in deps.libraries.items():
            directory = os.path.dirname(lib)
            # The enclave has no ld.so.cache: a library found through ld.so.conf outside the
            # loader's built-in directories goes next to the loader, as Occlum does.
            if kind == "conf" and directory not in DEFAULT_DIRS:
                dest = os.path.join(loader_dir, os.path.basename(lib))
            else:
                dest = lib
            self.copy_file(lib, dest, f"{where} (library of {path})", autodep=False)
        for name, needed_by in deps.missing:
            message = f"{where}: library '{name}' needed by '{needed_by}' not found on the host"
            if strict:
                self._required_libs.append((name, message))
            else:
                self.plan.warnings.append(message)

    def link(self, dest: str, text: str, where: str) -> None:
        dest = self.resolve_dest(dest, where)
        if self.host_of(dest).is_dir() and not self.host_of(dest).is_symlink():
            raise InputError(f"{where}: cannot create link '{dest}': a directory exists there")
        self.check_dest(dest, "link", where)
        self.plan.add(Op("link", dest, text, where))

    def copy_dir(self, source: str, dest_dir: str, where: str, excludes: list[str]) -> None:
        """rsync -ar --copy-unsafe-links `source` (a dir; trailing / = its contents)."""
        top = source.rstrip("/") or "/"
        if not os.path.isdir(top):
            raise InputError(f"{where}: '{source}' is not a directory")
        if not source.endswith("/"):
            dest_dir = _inside(dest_dir, os.path.basename(top), where)
        self.mkdir(dest_dir, where)
        self._walk(top, top, dest_dir, where, excludes)

    def _walk(self, tree: str, directory: str, dest_dir: str, where: str,
              excludes: list[str], walking: tuple[str, ...] = ()) -> None:
        real_tree = os.path.realpath(tree)
        walking = (*walking, os.path.realpath(directory))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise PylosError(f"{where}: cannot read directory '{directory}': "
                             f"{exc.strerror}") from None
        for entry in entries:
            try:
                self._walk_entry(tree, real_tree, entry, dest_dir, where, excludes, walking)
            except OSError as exc:  # e.g. it vanished while being planned (/proc)
                raise PylosError(f"{where}: cannot read '{entry.path}': "
                                 f"{exc.strerror or exc}") from None

    def _walk_entry(self, tree: str, real_tree: str, entry: os.DirEntry, dest_dir: str,
                    where: str, excludes: list[str], walking: tuple[str, ...]) -> None:
        rel = os.path.relpath(entry.path, tree)
        if _excluded(rel, entry.name, excludes):
            return
        dest = _inside(dest_dir, entry.name, where)
        if entry.is_symlink():
            target = os.readlink(entry.path)
            resolved = os.path.realpath(entry.path)
            if not target.startswith("/") and (resolved == real_tree or resolved.startswith(
                    real_tree + "/")):
                self.link(dest, target, where)  # stays inside the copied tree: kept
            elif os.path.isdir(resolved):
                if any(w == resolved or w.startswith(resolved.rstrip("/") + "/")
                       for w in walking):
                    raise InputError(f"{where}: the link '{entry.path}' leads back to "
                                     f"'{resolved}', which is being copied (a loop)")
                self.mkdir(dest, where)
                self._walk(resolved, resolved, dest, where, excludes, walking)
            elif os.path.isfile(resolved):
                self.copy_file(resolved, dest, where, strict_deps=False)
            else:
                self.plan.warnings.append(f"{where}: dangling link '{entry.path}' skipped")
        elif entry.is_dir():
            self.mkdir(dest, where)
            self._walk(tree, entry.path, dest, where, excludes, walking)
        elif entry.is_file():
            self.copy_file(entry.path, dest, where, strict_deps=False)

    # ---- one bom ------------------------------------------------------------------------
    def bom(self, path: Path, data: dict) -> None:
        excludes = [str(x) for x in _list(data.get("excludes"), f"{path}: excludes")]
        targets = _list(data.get("targets"), f"{path}: targets")
        for t, target in enumerate(targets):
            where = f"{path.name}: targets[{t}]"
            _check_keys(target, TARGET_KEYS, where)
            base = target.get("target")
            if not isinstance(base, str) or not base:
                raise InputError(f"{where}.target: expected a path inside the image")
            base = _inside("/", expand_vars(base, f"{where}.target"), f"{where}.target")
            self.mkdir(base, where)
            for i, name in enumerate(_list(target.get("mkdirs"), f"{where}.mkdirs")):
                self.mkdir(_inside(base, name, f"{where}.mkdirs[{i}]"), f"{where}.mkdirs[{i}]")
            for i, link in enumerate(_list(target.get("createlinks"), f"{where}.createlinks")):
                lwhere = f"{where}.createlinks[{i}]"
                _check_keys(link, LINK_KEYS, lwhere)
                if not isinstance(link.get("src"), str) or not isinstance(
                        link.get("linkname"), str):
                    raise InputError(f"{lwhere}: needs 'src' and 'linkname' strings")
                self.link(_inside(base, link["linkname"], lwhere),
                          check_path(link["src"], lwhere), lwhere)
            copies = _list(target.get("copy"), f"{where}.copy")
            for i, entry in enumerate(copies):
                cwhere = f"{where}.copy[{i}]"
                _check_keys(entry, COPY_KEYS, cwhere)
                prefix = entry.get("from")
                if prefix is not None and not isinstance(prefix, str):
                    raise InputError(f"{cwhere}.from: expected a path")
                dirs, files = entry.get("dirs"), entry.get("files")
                if dirs is None and files is None:
                    if prefix is None:
                        raise InputError(f"{cwhere}: needs 'from', 'dirs' or 'files'")
                    self.copy_dir(self.source(None, prefix.rstrip("/") + "/", cwhere), base,
                                  cwhere, excludes)
                for j, name in enumerate(_list(dirs, f"{cwhere}.dirs")):
                    dwhere = f"{cwhere}.dirs[{j}]"
                    if not isinstance(name, str):
                        raise InputError(f"{dwhere}: expected a directory name")
                    self.copy_dir(self.source(prefix, name, dwhere), base, dwhere, excludes)
            for i, entry in enumerate(copies):
                cwhere = f"{where}.copy[{i}]"
                for j, item in enumerate(_list(entry.get("files"), f"{cwhere}.files")):
                    self._file(base, entry.get("from"), item, f"{cwhere}.files[{j}]")

    def _file(self, base: str, prefix: str | None, item: Any, where: str) -> None:
        if isinstance(item, str):
            item = {"name": item}
        _check_keys(item, FILE_KEYS, where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.name: expected a file name")
        expected = item.get("hash")
        if expected is not None and (not isinstance(expected, str) or not HASH.match(expected)):
            raise InputError(f"{where}.hash: expected the SHA-256 as 64 upper-case hex digits, "
                             f"got {_short(expected)}")
        autodep = item.get("autodep", True)
        if not isinstance(autodep, bool):
            raise InputError(f"{where}.autodep: expected true or false")
        rename = item.get("rename")
        if rename is not None and (not isinstance(rename, str) or "/" in rename
                                   or rename in ("", ".", "..")):
            raise InputError(f"{where}.rename: expected a file name without '/'")
        source = self.source(prefix, name, where)
        dest = _inside(base, rename or os.path.basename(source.rstrip("/")), where)
        self.copy_file(source, dest, where, expected, autodep)

    def finish(self) -> Plan:
        present = {os.path.basename(op.dest) for op in self.plan.ops.values()}
        for name, message in self._required_libs:
            if name.startswith("/"):
                if any(op.dest == name for op in self.plan.ops.values()) or os.path.exists(
                        self.host_of(name)):
                    continue
            elif name in present or any(self.root.rglob(name)):
                continue
            raise InputError(message)
        return self.plan


def plan_bom(bom: Path, root: Path, include_dirs: list[Path]) -> Plan:
    """Everything `copy-bom` would do, checked; the image is not touched."""
    planner = Planner(root, [*include_dirs, *default_include_dirs()])
    for path, data in ordered_boms(bom, include_dirs + default_include_dirs()):
        planner.bom(path, data)
    return planner.finish()


def _excluded(rel: str, name: str, patterns: list[str]) -> bool:
    """rsync --exclude, the common forms: a bare pattern matches any component's name; one
    with a '/' matches the path relative to the copied directory (a leading '/' anchors)."""
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def apply_plan(plan: Plan, log: Callable[[str], None] | None = None) -> int:
    """Carry out `plan`; returns the number of files copied. PylosError (exit status 2) if
    the image cannot be written (the plan checked everything the bom asks for)."""
    try:
        return _apply(plan, log)
    except OSError as exc:
        raise PylosError(f"copy-bom: cannot write the image at '{plan.root}': {exc}") from None


def _apply(plan: Plan, log: Callable[[str], None] | None) -> int:
    root = plan.root
    root.mkdir(parents=True, exist_ok=True)
    copied = 0
    for op in plan.ops.values():
        host = root / op.dest.lstrip("/") if op.dest != "/" else root
        if op.kind == "mkdir":
            host.mkdir(parents=True, exist_ok=True)
        elif op.kind == "link":
            host.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(host):
                os.unlink(host)
            os.symlink(op.source, host)
        elif not op.unchanged:
            host.parent.mkdir(parents=True, exist_ok=True)
            _copy_atomic(op.source, host)
            copied += 1
        if log is not None and not (op.kind == "copy" and op.unchanged):
            log(op.describe())
    return copied


def _copy_atomic(source: str, dest: Path) -> None:
    short = os.fsdecode(os.fsencode(dest.name)[:NAME_MAX - 16])  # the temporary's name fits
    tmp = dest.with_name(f".{short}.pylos-tmp")
    try:
        shutil.copyfile(source, tmp)
        shutil.copystat(source, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
