"""Rendering manifest templates: Jinja2 with Gramine's globals (`gramine.*`, `python.*`, `env`,
`ldd`), StrictUndefined so a missing `-D` variable is an error naming it.

`python.*` describe the Python interpreter running pylos, as in Gramine. pylos runs from its own
virtual environment, so the paths are those of the venv's *base* interpreter (`sys.base_prefix`)
— what `gramine-manifest` run by that interpreter would give — never the venv's own site-packages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2

from pylos import install
from pylos.errors import PylosError

_BASE_VARS = {
    "base": sys.base_prefix,
    "platbase": sys.base_exec_prefix,
    "installed_base": sys.base_prefix,
    "installed_platbase": sys.base_exec_prefix,
}


class RuntimeDir:
    """`gramine.runtimedir`: callable (`runtimedir()`), printable and joinable with `/`."""

    def __call__(self, libc: str = "glibc") -> Path:
        return install.runtimedir(libc)

    def __str__(self) -> str:
        return str(self())

    def __truediv__(self, other: str) -> Path:
        return self() / other


def _get_paths(scheme: str | None = None, vars: dict | None = None) -> dict[str, str]:
    merged = {**_BASE_VARS, **(vars or {})}
    if scheme is None:
        return sysconfig.get_paths(vars=merged)
    return sysconfig.get_paths(scheme, vars=merged)


def _get_path(name: str, scheme: str | None = None, vars: dict | None = None) -> str:
    return _get_paths(scheme, vars)[name]


def get_sys_path(interpreter: str | os.PathLike, include_nonexisting: bool = False
                 ) -> Iterator[Path]:
    """The non-empty `sys.path` entries of `interpreter`, existing ones unless asked."""
    try:
        output = subprocess.run(
            [os.fspath(interpreter), "-c", "import sys\nprint('\\0'.join(sys.path), end='')"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PylosError(f"python.get_sys_path({os.fspath(interpreter)!r}) failed: {exc}") from exc
    for entry in output.split("\0"):
        if entry and (include_nonexisting or Path(entry).exists()):
            yield Path(entry)


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def ldd(*executables: str | os.PathLike) -> list[str]:
    """Sorted absolute paths of the libraries `ldd` reports for `executables` (vdso skipped)."""
    libs: set[str] = set()
    for exe in executables:
        try:
            output = subprocess.run(["ldd", os.fspath(exe)], check=True, capture_output=True,
                                    text=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise PylosError(f"ldd({os.fspath(exe)!r}) failed: {exc}") from exc
        for line in output.splitlines():
            match = _LDD_LINE.search(line)
            if match:
                libs.add(match.group(1))
    return sorted(libs)


def template_globals() -> dict[str, Any]:
    base_paths = _get_paths()
    distlib_stdlib = _get_path("stdlib", vars={"py_version_short": str(sys.version_info[0])})
    return {
        "gramine": {
            "libos": install.LIBOS_URI.removeprefix("file:"),
            "pkglibdir": install.pkglibdir(),
            "runtimedir": RuntimeDir(),
        },
        "python": {
            "stdlib": Path(base_paths["stdlib"]),
            "platstdlib": Path(base_paths["platstdlib"]),
            "purelib": Path(base_paths["purelib"]),
            "distlib": Path(distlib_stdlib) / "dist-packages",
            "get_sys_path": get_sys_path,
            "get_config_var": sysconfig.get_config_var,
            "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
            "get_path": _get_path,
            "get_paths": _get_paths,
            "implementation": sys.implementation,
        },
        "env": os.environ,
        "ldd": ldd,
    }


def parse_defines(defines: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`-D KEY=VALUE` defines a string (split at the first `=`); `-D KEY` alone is True."""
    variables: dict[str, Any] = {}
    for define in defines:
        name, sep, value = define.partition("=")
        if not name:
            raise PylosError(f"-D {define!r}: missing variable name before '='")
        variables[name] = value if sep else True
    return variables


def render(text: str, variables: dict[str, Any], source: str = "<string>",
           search_dir: Path | None = None) -> str:
    """Render a template; errors name the template, the line and (if undefined) the variable."""
    loader = jinja2.FileSystemLoader([str(search_dir or Path.cwd()), "."])
    environment = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.globals.update(template_globals())
    try:
        template = environment.from_string(text)
        return template.render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise PylosError(f"{source}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc)
        where = f"{source}:{line}" if line else source
        raise PylosError(
            f"{where}: undefined template variable: {exc.message} "
            "(define it with -D NAME=VALUE)"
        ) from None


def _template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised at (Jinja rewrites frames to template lines)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<template>":
            return frame.lineno
    return None
