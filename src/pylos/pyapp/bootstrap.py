"""The import trace: run by the venv's own interpreter (`python -c <this file> OUT APP ARGS...`),
never imported by pylos.

It runs APP as `python APP ARGS...` would (as `__main__`, `sys.argv = [APP, *ARGS]`,
`sys.path[0]` the script's real directory) with an audit hook that records every file the
program opens (`open` events: `open()`, `os.open`, and `io.open_code`, which the import
system reads `.py` and `.pyc` files with) and every `ctypes.dlopen`. When APP ends it writes
OUT (JSON): the modules in `sys.modules` with their files, what was opened, the state of each
source module's `.pyc`, the interpreter's paths and the installed distributions. Only builtins
and modules Python has already imported at start are used before APP runs, so the trace holds
what APP imports and nothing of its own; the rest is imported after the snapshot.
"""


def _pylos_trace(out, app, args):
    import os
    import sys

    opened = []
    dlopened = []
    recording = [True]

    def hook(event, event_args):
        if not recording[0]:
            return
        if event == "open":
            path, mode, flags = event_args
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if isinstance(path, str):
                writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)) or (
                    isinstance(mode, str) and any(c in mode for c in "wax+"))
                opened.append((os.path.abspath(path), writes))
        elif event == "ctypes.dlopen" and isinstance(event_args[0], str):
            dlopened.append(event_args[0])

    initial_path = list(sys.path)
    main = sys.modules["__main__"].__dict__
    del main["_pylos_trace"]
    with open(app, "rb") as f:
        source = f.read()
    try:
        code = compile(source, app, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        import json

        with open(out, "w") as f:
            json.dump({"syntax_error": f"{type(exc).__name__}: {exc}"}, f)
        raise SystemExit(3) from None
    main["__file__"] = app
    main["__doc__"] = None  # this file's docstring, until the script sets its own
    sys.argv[:] = [app, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(app))
    initial_path[0] = sys.path[0]
    sys.addaudithook(hook)
    status = None
    try:
        exec(code, main)
    except SystemExit as exc:
        status = exc.code
    except BaseException as exc:
        recording[0] = False
        import traceback

        # As Python reports an uncaught exception, without this function's frame.
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        raise SystemExit(1) from None
    finally:
        recording[0] = False
        snapshot = dict(sys.modules)
    # After the snapshot: what these imports bring is not the program's.
    import importlib.metadata
    import importlib.util
    import json
    import site

    def pyc_state(origin, cached):
        """'valid' (Python uses it without compiling), 'unchecked' (hash-based, never
        compared with the source), 'stale' or 'missing'."""
        try:
            with open(cached, "rb") as f:
                header = f.read(16)
        except OSError:
            return "missing"
        if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
            return "stale"
        flags = int.from_bytes(header[4:8], "little")
        if flags & 1:
            if not flags & 2:
                return "unchecked"
            with open(origin, "rb") as f:
                return "valid" if importlib.util.source_hash(f.read()) == header[8:16] else "stale"
        st = os.stat(origin)
        fresh = (int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                 and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)
        return "valid" if fresh else "stale"

    modules = {}
    for name, module in snapshot.items():
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not isinstance(origin, str) or not os.path.isabs(origin):
            continue  # built-in, frozen, namespace package, __main__
        entry = {"origin": origin}
        archive = getattr(getattr(module, "__loader__", None), "archive", None)
        if isinstance(archive, str):
            entry["archive"] = archive
        cached = getattr(spec, "cached", None)
        if isinstance(cached, str) and origin.endswith(".py") and "archive" not in entry:
            entry["cached"] = cached
            entry["pyc"] = pyc_state(origin, cached)
        modules[name] = entry

    distributions = []
    for dist in importlib.metadata.distributions():
        files = None
        if dist.files is not None:
            files = [os.path.abspath(str(f.locate())) for f in dist.files]
        top_level = (dist.read_text("top_level.txt") or "").split()
        meta_dir = getattr(dist, "_path", None)
        distributions.append({
            "name": dist.metadata["Name"], "version": dist.version, "files": files,
            "top_level": top_level, "metadata_dir": str(meta_dir) if meta_dir else None,
        })

    result = {
        "modules": modules, "opened": opened, "dlopened": dlopened, "sys_path": initial_path,
        "base_prefix": sys.base_prefix, "cache_tag": sys.implementation.cache_tag,
        "site_packages": site.getsitepackages(), "distributions": distributions,
    }
    with open(out, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    raise SystemExit(status)
