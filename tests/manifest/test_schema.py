from __future__ import annotations

import pytest

from pylos.errors import InputError, PylosError
from pylos.manifest import Manifest, validation_errors
from pylos.manifest.sizes import parse_size

MINIMAL = 'libos.entrypoint = "/app"\nfs.mounts = []\n'


def errors_of(text: str) -> list[str]:
    return validation_errors(Manifest.loads(MINIMAL + text).data)


def test_minimal_manifest_is_valid_and_gets_gramine_defaults():
    manifest = Manifest.loads(MINIMAL)
    manifest.check()
    sgx = manifest.data["sgx"]
    assert sgx["enclave_size"] == "256M"
    assert sgx["max_threads"] == 4
    assert sgx["trusted_files"] == []
    assert sgx["cpu_features"] == {"avx": "unspecified", "avx512": "unspecified",
                                   "amx": "unspecified", "mpx": "disabled", "pkru": "disabled"}
    assert manifest.data["loader"]["entrypoint"]["uri"] == "file:pylos-libos"
    assert len(manifest.data["loader"]["entrypoint"]["sha256"]) == 64


def test_edmm_changes_default_enclave_size():
    assert Manifest.loads(MINIMAL + "sgx.edmm_enable = true\n").enclave_size == 1024 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('loader.log_levl = "error"\n', "loader.log_levl: unknown key (did you mean 'loader.log_level'?)"),
        ("sgx.thread_num = 4\n", "sgx.thread_num: unknown key"),
        ("foo = 1\n", "foo: unknown key"),
        ('sgx.debug = "true"\n', "sgx.debug: expected a boolean, got string 'true'"),
        ("sgx.max_threads = true\n", "sgx.max_threads: expected an integer, got boolean True"),
        ('loader.log_level = "verbose"\n', 'loader.log_level: expected one of "none"'),
        ('sgx.remote_attestation = "epid"\n', "sgx.remote_attestation: expected one of"),
        ("sgx.trusted_files = [{ uri = \"file:a\", sha256 = 5 }]\n",
         "sgx.trusted_files[0].sha256: expected a string, got integer 5"),
        ("loader.argv = []\n", "loader.argv: must not be an empty array"),
        ("loader.env.X = { passthrough = false }\n", "loader.env.X.passthrough: 'passthrough = false'"),
        ("loader.env.X = 5\n", "loader.env.X: expected a string"),
        ('fs.mounts = [{ uri = "file:x" }]\n', "fs.mounts[0].path: required key is missing"),
        ('fs.mounts = [{ path = "/x", type = "nfs" }]\n', 'fs.mounts[0].type: expected one of "chroot"'),
        ("sys.stack.size = 4096\n", "sys.stack.size: expected a string"),
        ('sgx.cpu_features.mpx = "unspecified"\n', "sgx.cpu_features.mpx: expected one of"),
    ],
)
def test_bad_keys_are_named_by_dotted_path(text: str, expected: str):
    # fs.mounts appears twice in some cases: TOML rejects redefinition, so build fresh text.
    base = MINIMAL if "fs.mounts" not in text else 'libos.entrypoint = "/app"\n'
    found = validation_errors(Manifest.loads(base + text).data)
    assert any(expected in e for e in found), found


def test_missing_required_keys():
    found = validation_errors(Manifest.loads("sgx.debug = true\n").data)
    assert "libos: required key is missing" in found
    assert "fs: required key is missing" in found


def test_all_errors_reported_at_once():
    with pytest.raises(PylosError) as info:
        Manifest.loads(MINIMAL + 'sgx.debug = 1\nsys.fds.limit = "9"\n', "app.manifest").check()
    message = str(info.value)
    assert message.startswith("app.manifest: manifest failed validation")
    assert "sgx.debug" in message and "sys.fds.limit" in message


def test_every_documented_key_is_accepted():
    text = MINIMAL + """
loader.argv_src_file = "file:argv"
loader.insecure__use_cmdline_argv = false
loader.env.A = "1"
loader.env.B = { value = "2" }
loader.env.C = { passthrough = true }
loader.env_src_file = "file:env"
loader.insecure__use_host_env = false
loader.uid = 1000
loader.gid = 1000
loader.insecure__disable_aslr = false
loader.log_level = "trace"
loader.log_file = "log.txt"
libos.check_invalid_pointers = true
fs.root = { type = "chroot", uri = "file:/" }
fs.start_dir = "/"
fs.insecure__keys.default = "00112233445566778899aabbccddeeff"
sgx.debug = true
sgx.edmm_enable = false
sgx.enclave_size = "1G"
sgx.max_threads = 8
sgx.insecure__rpc_thread_num = 0
sgx.use_exinfo = false
sgx.insecure__allow_memfaults_without_exinfo = false
sgx.cpu_features = { avx = "required", avx512 = "disabled", amx = "unspecified", mpx = "disabled", pkru = "required" }
sgx.isvprodid = 1
sgx.isvsvn = 2
sgx.seal_key = { flags_mask = "0xffffffffffffffff", xfrm_mask = "0xfffffffffff9ff1b", misc_mask = "0xffffffff" }
sgx.trusted_files = [ "file:a", { uri = "file:b", sha256 = "00" } ]
sgx.allowed_files = [ "file:c", "dev:tty" ]
sgx.file_check_policy = "allow_all_but_log"
sgx.remote_attestation = "dcap"
sgx.preheat_enclave = false
sgx.enable_stats = false
sgx.profile = { enable = "main", mode = "aex", with_stack = true, frequency = 50 }
sgx.vtune_profile = false
sys.stack.size = "2M"
sys.brk.max_size = "1M"
sys.fds.limit = 900
sys.disallow_subprocesses = false
sys.enable_sigterm_injection = true
sys.insecure__allow_eventfd = false
sys.experimental__enable_flock = false
sys.enable_extra_runtime_domain_names_conf = true
sys.allowed_ioctls = [ { request_code = 0x8912, struct = "ifconf" } ]
sys.ioctl_structs.ifconf = [ { size = 8, direction = "out" } ]
sys.debug__mock_syscalls = [ { name = "sched_yield", return = 0 } ]
"""
    text = text.replace("fs.mounts = []\n", "fs.mounts = [{ path = \"/t\", type = \"tmpfs\" },"
                        "{ path = \"/e\", uri = \"file:e\", type = \"encrypted\", "
                        "key_name = \"default\", enable_recovery = true }]\n")
    assert validation_errors(Manifest.loads(text).data) == []


def test_invalid_trusted_file_entry_form():
    with pytest.raises(PylosError, match=r"sgx.trusted_files\[0\]"):
        Manifest.loads(MINIMAL + "sgx.trusted_files = [5]\n")


def test_toml_syntax_error_names_the_line():
    with pytest.raises(PylosError, match=r"app.manifest: failed to parse manifest: .*line 2"):
        Manifest.loads('a = 1\nb = { x = 1, }\n', "app.manifest")


@pytest.mark.parametrize("text", ["²M", "9" * 30 + "K", "-1", "1T", ""])
def test_size_strings_that_are_not_sizes(text):
    """ASCII digits only ("²".isdigit() is true, int() refuses it), and not absurdly many."""
    with pytest.raises(InputError, match=r"sgx\.enclave_size: invalid size"):
        parse_size(text, "sgx.enclave_size")


def test_manifest_that_is_not_utf8_or_too_deep(tmp_path):
    (tmp_path / "a.manifest").write_bytes(b'loader.log_level = "\xff"\n')
    with pytest.raises(InputError, match=r"a.manifest: not a UTF-8 text manifest \(byte 20"):
        Manifest.load(tmp_path / "a.manifest")
    with pytest.raises(InputError, match="nested too deeply"):
        Manifest.loads("x = " + "[" * 5000 + "]" * 5000 + "\n", "deep.manifest")
