"""The manifest template `pylos python init` writes: Gramine syntax (Jinja2 + TOML), in the
style of Gramine's python example, with every trusted file named and grouped."""

from __future__ import annotations

import json
import shlex
import textwrap

from pylos.pyapp.plan import Plan
from pylos.pyapp.trace import ENCLAVE_ENV

PYC_POLICY = (
    ".pyc files: precompiled and trusted. The native run that traced the app compiled what it "
    "imported (Python writes __pycache__/<module>.{tag}.pyc next to each source it compiles, "
    "where it may write); each module's .pyc is trusted with its source when Python will use "
    "it: a timestamp .pyc whose recorded mtime and size match the source (the enclave sees the "
    "host's mtimes, so the check passes there too), or a hash-based one. Inside, "
    "PYTHONDONTWRITEBYTECODE keeps Python from writing any (the mounts are read-only). A "
    "tampered .pyc is refused when opened and Python falls back to its trusted source; a "
    "tampered source is refused."
)


def _literal(value: str) -> str:
    """A TOML basic string for `value` that Jinja2 passes through unchanged."""
    text = json.dumps(value, ensure_ascii=False)
    if any(mark in text for mark in ("{{", "{%", "{#")):
        return "{% raw %}" + text + "{% endraw %}"
    return text


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=indent + "# ", subsequent_indent=indent + "# ",
                         break_on_hyphens=False, break_long_words=False)


def render_template(plan: Plan, command: list[str]) -> str:
    trace = plan.trace
    entry = str(trace.venv.python)
    argv = [entry, str(trace.app), *trace.args]
    base = str(trace.app.name).removesuffix(".py")
    lines = [
        *_comment(f"{trace.app.name} in its virtual environment {trace.venv.root}, for pylos "
                  "(Gramine manifest syntax). Written by:"),
        f"#   {shlex.join(command)}",
        "# Build, sign and run:",
        f"#   pylos manifest {base}.manifest.template {base}.manifest",
        f"#   pylos sign -m {base}.manifest",
        f"#   pylos run {base}",
        "#",
        *_comment(f"Trusted: exactly the {plan.trusted_count} files a native run of the app "
                  "loaded (an import trace: sys.modules and an audit hook on open), the "
                  "interpreter and the shared libraries they link. Run `pylos python init` "
                  "again when the app or the venv changes."),
        "#",
        *_comment(PYC_POLICY.format(tag=trace.cache_tag)),
    ]
    if plan.uncompiled:
        lines += _comment(f"{len(plan.uncompiled)} imported modules have no usable .pyc (their "
                          "__pycache__ was not writable): Python compiles them at every start; "
                          "`python -m compileall` by their owner, then init again, spares that:")
        lines += [f"#   {path}" for path in plan.uncompiled[:20]]
        if len(plan.uncompiled) > 20:
            lines.append(f"#   ... and {len(plan.uncompiled) - 20} more")
    if plan.missing_libraries:
        lines += _comment("Shared libraries the ELF resolver did not find on this host "
                          "(the native run may have found them another way: add them by hand "
                          "if the enclave needs them):")
        lines += [f"#   {name} (needed by {by})" for name, by in plan.missing_libraries]
    lines += [
        "",
        f"libos.entrypoint = {_literal(entry)}",
        "",
        "loader.log_level = \"{{ log_level | default('error') }}\"",
        "",
        "# The app's command line, fixed here: the host's arguments are not passed in.",
        "loader.argv = [" + ", ".join(_literal(arg) for arg in argv) + "]",
        "",
        f"loader.env.LD_LIBRARY_PATH = {_literal(':'.join(plan.library_path))}",
        "# Nothing writes .pyc files inside (see above).",
        'loader.env.PYTHONDONTWRITEBYTECODE = "1"',
        *(f"loader.env.{name} = {_literal(value)}" for name, value in ENCLAVE_ENV.items()),
        "",
        "sys.enable_sigterm_injection = true",
        'sys.stack.size = "2M"',
        "",
        "# Mounted read-only at their host paths: the directories holding trusted files,",
        "# collapsed to the outermost; glibc from gramine.runtimedir() at /lib, as in",
        "# Gramine's python example; a private tmpfs at /tmp.",
        "fs.mounts = [",
        '  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },',
    ]
    tmp_added = False
    for mount in plan.mounts:
        if not tmp_added and mount.path >= "/tmp":
            lines.append('  { type = "tmpfs", path = "/tmp" },')
            tmp_added = True
        uri = _literal("file:" + mount.path)
        lines.append(f"  {{ path = {_literal(mount.path)}, uri = {uri} }},")
    if not tmp_added:
        lines.append('  { type = "tmpfs", path = "/tmp" },')
    lines += [
        "]",
        "",
        'sgx.enclave_size = "1G"',
        "sgx.max_threads = {{ '1' if env.get('EDMM', '0') == '1' else '32' }}",
        "sgx.edmm_enable = {{ 'true' if env.get('EDMM', '0') == '1' else 'false' }}",
        "",
        "sgx.trusted_files = [",
        "  # glibc, from gramine.runtimedir(): what the interpreter and extension modules link",
        *(f'  "file:{{{{ gramine.runtimedir() }}}}/{name}",' for name in plan.glibc),
    ]
    for group in plan.groups:
        lines += _comment(group.comment, "  ")
        lines += [f"  {_literal('file:' + path)}," for path in group.paths]
    lines += ["]", ""]
    return "\n".join(lines)
