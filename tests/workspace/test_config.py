"""Occlum.json: the template is accepted, unsupported keys are named in a warning, unknown
keys and bad values are errors naming the dotted path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pylos.errors import PylosError
from pylos.workspace.config import TEMPLATE, parse_config, parse_size
from pylos.workspace.workspace import init_workspace, manifest_data

from support import run_pylos


def config(**changes) -> dict:
    data = copy.deepcopy(TEMPLATE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        table = data
        for part in parents:
            table = table.setdefault(part, {})
        if value is None:
            table.pop(last)
        else:
            table[last] = value
    return data


def test_template_maps_to_manifest_values(tmp_path: Path):
    parsed = parse_config(config(env__default=["OCCLUM=yes", "A=b=c"]))
    assert parsed.user_space_size == 300 << 20
    assert parsed.max_threads == 32
    assert (parsed.stack_size, parsed.heap_size) == (4 << 20, 32 << 20)
    assert parsed.entry_points == ["/bin"]
    assert parsed.env_default == {"OCCLUM": "yes", "A": "b=c"}
    assert parsed.debuggable is True
    assert [(m.target, m.type, m.source) for m in parsed.mounts] == [("/host", "hostfs", ".")]
    assert "resource_limits.kernel_space_heap_size" in parsed.warnings[0]
    assert "feature.amx" in parsed.warnings[0]
    (tmp_path / "image").mkdir()
    data = manifest_data(tmp_path, parsed, {"loader": "/l", "python": "/p"}, [])
    assert data["sgx"]["enclave_size"] == "512M"  # a power of two, as SGX requires
    assert data["sgx"]["max_threads"] == 32
    assert data["sys"]["stack"]["size"] == "4M" and data["sys"]["brk"]["max_size"] == "32M"
    assert data["fs"]["root"] == {"type": "union", "uri": "file:image"}
    assert {"path": "/host", "uri": "file:."} in data["fs"]["mounts"]


def test_metadata_and_ramfs():
    parsed = parse_config(config(metadata__product_id=7, metadata__version_number=3,
                                 metadata__debuggable=False,
                                 mount=[*TEMPLATE["mount"], {"target": "/scratch",
                                                             "type": "ramfs"}]))
    assert (parsed.product_id, parsed.version_number, parsed.debuggable) == (7, 3, False)
    assert parsed.mounts[-1].type == "ramfs"


@pytest.mark.parametrize(("changes", "message"), [
    ({"resource_limits__user_space_sise": "1MB"},
     "resource_limits.user_space_sise: unknown key"),
    ({"surprise": 1}, "surprise: unknown key"),
    ({"resource_limits__user_space_size": "100M"}, "resource_limits.user_space_size: expected a"
                                                   " size"),
    ({"resource_limits__user_space_size": "1.5GB"}, "resource_limits.user_space_size"),
    ({"process__default_heap_size": "64mb"}, "process.default_heap_size"),
    ({"resource_limits__max_num_of_threads": "32"},
     "resource_limits.max_num_of_threads: expected an integer"),
    ({"entry_points": ["bin"]}, "entry_points[0]: expected an absolute path"),
    ({"env__default": ["NOEQUALS"]}, "env.default[0]: expected \"NAME=value\""),
    ({"metadata__debuggable": None}, "metadata.debuggable: required key missing"),
    ({"metadata__product_id": 70000}, "metadata.product_id: must be between 0 and 65535"),
    ({"mount": [{"target": "/host", "type": "hostfs", "source": "."}]},
     "needs the root file system entry"),
    ({"mount": [*TEMPLATE["mount"], {"target": "/ext2", "type": "ext2",
                                     "options": {"disk_size": "10GB"}}]},
     "mount[2]: a ext2 mount at /ext2 is not supported"),
    ({"mount": [*TEMPLATE["mount"], {"target": "/x", "type": "hostfs", "sorce": "."}]},
     "mount[2].sorce: unknown key"),
])
def test_bad_configs(changes: dict, message: str):
    with pytest.raises(PylosError) as info:
        parse_config(config(**changes))
    assert message in str(info.value)


def test_sizes():
    assert parse_size("300MB", "k") == 300 << 20
    assert parse_size("1 GB", "k") == 1 << 30
    assert parse_size("5B", "k") == 5
    for bad in ("1.5GB", "64mb", "100M", "MB", "", 5):
        with pytest.raises(PylosError):
            parse_size(bad, "k")


def test_build_reports_bad_config_without_traceback(tmp_path: Path):
    init_workspace(tmp_path)
    data = json.loads((tmp_path / "Occlum.json").read_text())
    data["resource_limits"]["user_space_size"] = "300M"
    (tmp_path / "Occlum.json").write_text(json.dumps(data))
    result = run_pylos("build", cwd=tmp_path)
    assert result.returncode == 1  # the configuration is rejected
    assert "resource_limits.user_space_size" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("ERROR: Occlum.json: invalid configuration:")
    (tmp_path / "Occlum.json").write_text("{not json")
    result = run_pylos("build", cwd=tmp_path)
    assert result.returncode == 1 and "not valid JSON" in result.stderr


def test_user_space_max_size_replaces_the_size_without_edmm(tmp_path: Path):
    # Occlum without EDMM: user_space_max_size, when given, is the user space's size.
    parsed = parse_config(config(resource_limits__user_space_max_size="900MB"))
    assert parsed.user_space_size == 900 << 20
    assert not any("user_space_max_size" in warning for warning in parsed.warnings)
    (tmp_path / "image").mkdir()
    data = manifest_data(tmp_path, parsed, {"loader": "/l", "python": "/p"}, [])
    assert data["sgx"]["enclave_size"] == "1G"
