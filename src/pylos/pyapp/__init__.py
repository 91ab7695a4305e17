"""`pylos python init`: a manifest template for a Python app in a virtual environment that
trusts exactly what the app loads (an import trace of one native run), not whole directories.

    trace = trace_app(Venv.find("venv"), "app.py")        # trace.py: the native run
    plan = build_plan(trace, glibc_names)                  # plan.py: trusted files, mounts
    text = render_template(plan, command)                  # template.py: the manifest template
"""

from __future__ import annotations

import os
from pathlib import Path

from pylos import install
from pylos.errors import PylosError
from pylos.hashing import write_atomic
from pylos.pyapp.plan import Plan, build_plan
from pylos.pyapp.template import render_template
from pylos.pyapp.trace import Trace, Venv, trace_app

__all__ = ["Plan", "Trace", "Venv", "build_plan", "init_app", "render_template", "trace_app"]


def init_app(app: str | os.PathLike, venv: Venv, output: Path, args: tuple[str, ...] = (),
             command: list[str] | None = None, timeout: float = 120) -> Plan:
    """Trace `app` in `venv`, write its manifest template to `output` atomically."""
    trace = trace_app(venv, app, args, timeout)
    glibc_names = {entry.name for entry in install.runtimedir().iterdir()}
    plan = build_plan(trace, glibc_names)
    text = render_template(plan, command or ["pylos", "python", "init", str(app)])
    try:
        write_atomic(output, text.encode())
    except OSError as exc:
        raise PylosError(f"cannot write '{output}': {exc.strerror}") from None
    return plan
