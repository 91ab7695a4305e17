"""What this pylos installation is: where its runtime directory lives, what its code hashes to.

Gramine ships a patched glibc in `<pkglibdir>/runtime/glibc`; templates mount and trust
`gramine.runtimedir()`. pylos runs the host's own glibc, so its runtime directory holds *copies*
of the host's glibc runtime libraries (loader, libc, libm, libpthread, ..., libnss_*). Copies,
not the host directory itself: a template that trusts `gramine.runtimedir()/` then hashes a few
MB instead of all of `/lib`, and a later host glibc upgrade cannot change what a signed enclave
loads.

The location is fixed per installation (`<sys.prefix>/lib/pylos`, i.e. inside the venv pylos
is installed in), never per user or per working directory, so the same template rendered by
another user or in another directory yields the same manifest bytes. `PYLOS_PKGLIBDIR`
overrides it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from functools import cache

from pylos.errors import PylosError
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

# The URI recorded in `loader.entrypoint.uri`: Gramine's slot for the LibOS binary. pylos's LibOS
# is its Python package; the URI names it abstractly (never an install path, which would make
# MRENCLAVE depend on where pylos is installed) and `loader.entrypoint.sha256` holds the content
# hash of the package (`libos_hash`).
LIBOS_URI = "file:pylos-libos"

# The glibc runtime set that Gramine's runtime/glibc directory holds, as file-name patterns in
# the host's multiarch library directory.
GLIBC_RUNTIME_PATTERNS = (
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libmvec.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libBrokenLocale.so.1",
    "libc_malloc_debug.so.0",
    "libthread_db.so.1",
    "libnss_*.so.2",
)

HOST_LIBDIR_CANDIDATES = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib")


def pkglibdir() -> str:
    """pylos's per-installation library directory (Gramine's `gramine.pkglibdir`). A string:
    `pylos run` needs it, and importing pathlib costs its start ~6 ms."""
    return os.environ.get("PYLOS_PKGLIBDIR") or os.path.join(sys.prefix, "lib", "pylos")


def _host_glibc_dir() -> Path:
    from pathlib import Path

    for candidate in HOST_LIBDIR_CANDIDATES:
        if Path(candidate, "libc.so.6").is_file():
            return Path(candidate)
    raise PylosError(
        "cannot find the host's glibc (libc.so.6) in any of " + ", ".join(HOST_LIBDIR_CANDIDATES)
    )


def runtimedir(libc: str = "glibc") -> Path:
    """The runtime directory for `libc`, populated from the host on first use."""
    if libc != "glibc":
        raise PylosError(f"gramine.runtimedir(libc={libc!r}): pylos supports only 'glibc'")
    from pathlib import Path

    target = Path(pkglibdir(), "runtime", libc)
    if not target.is_dir():
        _populate_runtimedir(target)
    return target


def _populate_runtimedir(target: Path) -> None:
    """Copy the host's glibc runtime into `target` atomically (a temp dir renamed into place)."""
    import shutil  # here, not at the top: `pylos run` never needs them
    import tempfile
    from pathlib import Path

    source = _host_glibc_dir()
    names = sorted({p.name for pattern in GLIBC_RUNTIME_PATTERNS for p in source.glob(pattern)})
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".runtime-", dir=target.parent))
    except OSError as exc:
        raise PylosError(f"cannot create the pylos runtime directory {target}: {exc}") from exc
    try:
        for name in names:
            # Follow symlinks: the runtime dir holds real files whose hashes never change.
            shutil.copy2(source / name, staging / name)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # lost a race with another pylos: theirs is as good
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@cache
def _package_files() -> list[tuple[str, str, os.stat_result]]:
    """(path relative to the package, full path, stat) of the package's own files, sorted;
    byte-code caches skipped. os.walk, not Path.rglob: every `pylos run` walks them, and
    pathlib's walk costs as much as hashing them."""
    package_root = os.path.dirname(os.path.realpath(__file__))
    files = []
    for directory, subdirectories, names in os.walk(package_root, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        inside = os.path.relpath(directory, package_root)
        for name in names:
            full = os.path.join(directory, name)
            if name.endswith(".pyc"):
                continue
            st = os.stat(full)
            if stat.S_ISREG(st.st_mode):
                files.append((name if inside == "." else f"{inside}/{name}", full, st))
    return sorted(files)


@cache
def libos_hash() -> str:
    """SHA-256 over the pylos package's own files: the identity of this LibOS build.

    Each file contributes `<relative posix path>\\0<sha256 hex>\\n`, in sorted path order;
    byte-code caches are skipped. The hash depends on content only, never on the install path.
    """
    outer = hashlib.sha256()
    for rel, full, _ in _package_files():
        with open(full, "rb") as content:
            digest = hashlib.sha256(content.read()).hexdigest()
        outer.update(f"{rel}\0{digest}\n".encode())
    return outer.hexdigest()


def libos_fingerprint() -> str:
    """A digest of every package file's path, size, inode, modification and change times:
    it changes whenever `libos_hash` may have (what a cache of that hash is keyed by)."""
    stamps = "".join(f"{rel}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n"
                     for rel, _, st in _package_files())
    return hashlib.sha256(stamps.encode()).hexdigest()
