"""Why two enclave measurements differ: `pylos mrenclave explain A B`.

Each side is a build: a `.sig` alone (what the SIGSTRUCT says: MRENCLAVE, attributes, misc
select, ISV ids, date, signer), a `.manifest.sgx` (with its `APP.sig` when one lies beside it),
or a build directory holding exactly one `APP.manifest.sgx` + `APP.sig` pair. With manifests on
both sides the differences are named as the manifest states them (keys, trusted files, the
layout inputs), and the two measurement record streams (`pylos.sgx.layout.measured_pages`)
are walked side by side to the first record that differs, so a difference no key explains (a
hand-edited `.manifest.sgx`) still points at a page and a manifest line.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylos.errors import InputError, PylosError, about
from pylos.manifest import Manifest
from pylos.sgx.layout import SSA_FRAME_PAGES, Area, describe_layout, measured_pages
from pylos.sgx.measure import CHUNK
from pylos.sgx.sign import enclave_attributes, libos_hash_of, measure
from pylos.sgx.sigstruct import Sigstruct
from pylos.sgx.structs import PAGE_SIZE

SIG_SUFFIX, MANIFEST_SUFFIX = ".sig", ".manifest.sgx"
RECORDS_PER_PAGE = 1 + PAGE_SIZE // CHUNK  # EADD + 16 EEXTEND


@dataclass
class EnclaveBuild:
    """One side of the comparison: a signed manifest, its SIGSTRUCT, or both."""

    source: str                     # what the user named, for messages
    manifest_path: Path | None = None
    sig_path: Path | None = None
    manifest_sgx: bytes | None = None
    manifest: Manifest | None = None
    sigstruct: Sigstruct | None = None
    mr_enclave: bytes = b""         # measured from the manifest when there is one, else the sig's

    def libos_hash(self) -> bytes:
        assert self.manifest is not None
        return libos_hash_of(self.manifest)

    def layout_inputs(self) -> tuple[bytes, bytes, int, int, bool]:
        assert self.manifest is not None and self.manifest_sgx is not None
        m = self.manifest
        return self.manifest_sgx, self.libos_hash(), m.enclave_size, m.max_threads, m.edmm


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PylosError(f"cannot read '{path}': {exc.strerror or exc}") from None


def _load_sig(path: Path) -> Sigstruct:
    with about(str(path)):
        return Sigstruct.unpack(_read(path))


def _load_manifest(path: Path) -> tuple[bytes, Manifest]:
    data = _read(path)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text manifest (byte {exc.start} is "
                         f"{data[exc.start]:#04x})") from None
    manifest = Manifest.loads(text, str(path))
    with about(str(path)):
        manifest.check()
    return data, manifest


def _pair_in_directory(directory: Path) -> tuple[Path, Path]:
    manifests = sorted(directory.glob("*" + MANIFEST_SUFFIX))
    if len(manifests) != 1:
        found = ", ".join(p.name for p in manifests) if manifests else "none"
        raise PylosError(f"{directory}: a build directory holds exactly one *{MANIFEST_SUFFIX} "
                         f"(found {found}); name the file to compare instead")
    sig = manifests[0].with_name(manifests[0].name.removesuffix(MANIFEST_SUFFIX) + SIG_SUFFIX)
    if not sig.is_file():
        raise PylosError(f"{directory}: {manifests[0].name} has no {sig.name} beside it "
                         f"(sign it with `pylos sign`)")
    return manifests[0], sig


def load_build(path: Path) -> EnclaveBuild:
    """A `.sig`, a `.manifest.sgx` (+ its `.sig` if present) or a build directory.

    PylosError (2) for a path that is none of these or cannot be read; InputError (1), naming
    the file, for a SIGSTRUCT or manifest whose content is rejected."""
    build = EnclaveBuild(str(path))
    if path.is_dir():
        build.manifest_path, build.sig_path = _pair_in_directory(path)
    elif path.name.endswith(MANIFEST_SUFFIX):
        build.manifest_path = path
        sig = path.with_name(path.name.removesuffix(MANIFEST_SUFFIX) + SIG_SUFFIX)
        build.sig_path = sig if sig.is_file() else None
    elif path.name.endswith(SIG_SUFFIX):
        build.sig_path = path
    elif not path.exists():
        raise PylosError(f"'{path}' does not exist")
    else:
        raise PylosError(f"'{path}': expected a {SIG_SUFFIX}, a {MANIFEST_SUFFIX} or a build "
                         "directory")
    if build.sig_path is not None:
        build.sigstruct = _load_sig(build.sig_path)
        build.mr_enclave = build.sigstruct.enclave_hash
    if build.manifest_path is not None:
        build.manifest_sgx, build.manifest = _load_manifest(build.manifest_path)
        with about(str(build.manifest_path)):
            build.mr_enclave = measure(build.manifest_sgx, build.manifest)
    return build


@dataclass(frozen=True)
class Change:
    """One thing that differs: its name and its value in A and in B (None: absent there)."""

    name: str
    a: Any
    b: Any


@dataclass(frozen=True)
class RecordDifference:
    """The first measurement record that differs between A and B."""

    index: int            # records from ECREATE (0)
    operation: str        # ECREATE, EADD or EEXTEND
    offset: int | None    # enclave offset of the page (EADD) or chunk (EEXTEND)
    area: str | None      # what lives there in A's layout (B's if A has none)
    detail: str           # what differs, in words


@dataclass
class Explanation:
    a: EnclaveBuild
    b: EnclaveBuild
    manifest_keys: list[Change] = field(default_factory=list)
    trusted_files: list[Change] = field(default_factory=list)
    enclave: list[Change] = field(default_factory=list)
    layout: list[Change] = field(default_factory=list)
    sigstruct: list[Change] = field(default_factory=list)
    first_difference: RecordDifference | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.a.mr_enclave == self.b.mr_enclave

    def to_json(self) -> dict:
        def side(build: EnclaveBuild) -> dict:
            return {"source": build.source, "mr_enclave": build.mr_enclave.hex(),
                    "manifest": str(build.manifest_path) if build.manifest_path else None,
                    "sig": str(build.sig_path) if build.sig_path else None}

        changes = ("manifest_keys", "trusted_files", "enclave", "layout", "sigstruct")
        return {
            "equal": self.equal, "a": side(self.a), "b": side(self.b),
            **{name: [asdict(c) for c in getattr(self, name)] for name in changes},
            "first_difference": asdict(self.first_difference) if self.first_difference else None,
            "notes": self.notes,
        }


# ---- manifests ---------------------------------------------------------------------------

def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and (value or not prefix):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix] = value


def _manifest_keys(a: Manifest, b: Manifest) -> list[Change]:
    """Every leaf key (`fs.mounts[1].uri`) whose value differs; trusted files apart."""
    flat_a: dict[str, Any] = {}
    flat_b: dict[str, Any] = {}
    for manifest, flat in ((a, flat_a), (b, flat_b)):
        data = {**manifest.data, "sgx": {k: v for k, v in manifest.sgx.items()
                                         if k != "trusted_files"}}
        _flatten(data, "", flat)
    keys = sorted(flat_a.keys() | flat_b.keys())
    return [Change(k, flat_a.get(k), flat_b.get(k)) for k in keys if flat_a.get(k) != flat_b.get(k)
            or (k in flat_a) != (k in flat_b)]


def _trusted_files(a: Manifest, b: Manifest) -> list[Change]:
    """Trusted files added, removed, or with another SHA-256, by URI."""
    hashes_a = {e["uri"]: e.get("sha256") for e in a.trusted_files}
    hashes_b = {e["uri"]: e.get("sha256") for e in b.trusted_files}
    return [Change(uri, hashes_a.get(uri), hashes_b.get(uri))
            for uri in sorted(hashes_a.keys() | hashes_b.keys())
            if hashes_a.get(uri) != hashes_b.get(uri)]


def _enclave_fields(build: EnclaveBuild) -> dict[str, Any]:
    """What defines the enclave besides the manifest text: from the manifest when there is one
    (the layout inputs too), else from the SIGSTRUCT."""
    if build.manifest is not None:
        manifest = build.manifest
        attributes, _, misc_select = enclave_attributes(manifest)
        fields: dict[str, Any] = {
            "enclave size": f"{manifest.enclave_size:#x}",
            "max threads": manifest.max_threads,
            "EDMM": manifest.edmm,
            "LibOS hash": build.libos_hash().hex(),
            "manifest size": f"{len(build.manifest_sgx or b'')} bytes",
        }
        isv = (manifest.sgx["isvprodid"], manifest.sgx["isvsvn"])
    else:
        assert build.sigstruct is not None
        sig, fields = build.sigstruct, {}
        attributes, misc_select, isv = sig.attributes, sig.misc_select, (sig.isv_prod_id,
                                                                           sig.isv_svn)
    fields.update({
        "attributes.flags": f"{attributes.flags:#018x}",
        "attributes.xfrm": f"{attributes.xfrm:#018x}",
        "misc select": f"{misc_select:#010x}",
        "ISV prod id": isv[0],
        "ISV SVN": isv[1],
    })
    return fields


def _sigstruct_fields(sig: Sigstruct) -> dict[str, Any]:
    """The SIGSTRUCT's own fields, the ones no manifest key sets."""
    return {
        "MRSIGNER": sig.mr_signer().hex(),
        "date": sig.date.isoformat() if sig.date else "0000-00-00",
        "attribute mask": f"flags {sig.attribute_mask.flags:#018x} xfrm "
                          f"{sig.attribute_mask.xfrm:#018x}",
        "misc mask": f"{sig.misc_mask:#010x}",
        "ISV family id": sig.isv_family_id.hex(),
        "ISV ext prod id": sig.isv_ext_prod_id.hex(),
        "signature valid": sig.verify(),
    }


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    return [Change(name, a[name], b[name]) for name in a if name in b and a[name] != b[name]]


# ---- layout and records --------------------------------------------------------------------

def _area_text(area: Area | None) -> str | None:
    return None if area is None else (f"{area.offset:#x}-{area.offset + area.size:#x} "
                                      f"({area.size // PAGE_SIZE} pages)")


def _layout(a: EnclaveBuild, b: EnclaveBuild) -> list[Change]:
    """Areas (manifest, libos, tcs[i], ssa[i]) placed or sized differently. When the enclave
    size changes, every area moves with the top of the enclave: one line says so."""
    areas_a = {area.name: area for area in describe_layout(*a.layout_inputs())}
    areas_b = {area.name: area for area in describe_layout(*b.layout_inputs())}
    names = list(areas_a) + [name for name in areas_b if name not in areas_a]
    moved = [n for n in names if _area_text(areas_a.get(n)) != _area_text(areas_b.get(n))]
    size_a, size_b = a.layout_inputs()[2], b.layout_inputs()[2]
    common = [n for n in names if n in areas_a and n in areas_b]
    if size_a != size_b and all(areas_a[n].offset - size_a == areas_b[n].offset - size_b
                                and areas_a[n].size == areas_b[n].size for n in common):
        delta = size_b - size_a
        moved = [n for n in moved if n not in common]
        return [Change("every area", f"placed below {size_a:#x}",
                       f"placed below {size_b:#x} (moved by {'+' if delta > 0 else '-'}"
                       f"{abs(delta):#x})")] + [
            Change(n, _area_text(areas_a.get(n)), _area_text(areas_b.get(n))) for n in moved]
    return [Change(n, _area_text(areas_a.get(n)), _area_text(areas_b.get(n))) for n in moved]


def _manifest_line(manifest_sgx: bytes, position: int) -> tuple[str, str]:
    """(`line N [table]`, the line's text) of the manifest byte at `position`."""
    if position >= len(manifest_sgx):
        return f"past the end of the manifest ({len(manifest_sgx)} bytes)", "NUL, zero padding"
    start = manifest_sgx.rfind(b"\n", 0, position) + 1
    end = manifest_sgx.find(b"\n", position)
    text = manifest_sgx[start : end if end >= 0 else len(manifest_sgx)].decode(errors="replace")
    if len(text) > 100:
        text = text[:97] + "..."
    line = manifest_sgx.count(b"\n", 0, position) + 1
    where = f"line {line}"
    table_at = manifest_sgx.rfind(b"\n[", 0, start)
    if table_at >= 0 or manifest_sgx.startswith(b"["):
        header_end = manifest_sgx.find(b"\n", table_at + 1)
        header = manifest_sgx[table_at + 1 : header_end].decode(errors="replace")
        where += f" in {header}"
    return where, text


def _where(area: Area, offset: int, build: EnclaveBuild) -> tuple[str, str]:
    """Where an enclave byte lies, and what is there (a manifest line) if that says more."""
    if area.name == "manifest":
        position = offset - area.offset
        line, text = _manifest_line(build.manifest_sgx or b"", position)
        return f"manifest byte {position}, {line}", text
    return f"{area.name} page {(offset - area.offset) // PAGE_SIZE}", ""


def first_record_difference(a: EnclaveBuild, b: EnclaveBuild) -> RecordDifference | None:
    """Walk both measurements (ECREATE, then per page EADD + 16 EEXTEND) to the first record
    that differs; None when the record streams are the same."""
    inputs_a, inputs_b = a.layout_inputs(), b.layout_inputs()
    if inputs_a[2] != inputs_b[2]:
        return RecordDifference(0, "ECREATE", None, None,
                                f"SIZE {inputs_a[2]:#x} → {inputs_b[2]:#x} "
                                f"(SSAFRAMESIZE {SSA_FRAME_PAGES} page on both)")
    pages = itertools.zip_longest(measured_pages(*inputs_a), measured_pages(*inputs_b))
    for number, (page_a, page_b) in enumerate(pages):
        index = 1 + number * RECORDS_PER_PAGE
        if page_a is None or page_b is None:
            area, offset, _ = page_a or page_b
            side = "A" if page_a else "B"
            return RecordDifference(index, "EADD", offset, area.name,
                                    f"only {side} adds a page here ({area.name})")
        (area_a, offset_a, data_a), (area_b, offset_b, data_b) = page_a, page_b
        if (offset_a, area_a.flags) != (offset_b, area_b.flags):
            return RecordDifference(
                index, "EADD", offset_a, area_a.name,
                f"A adds {offset_a:#x} ({area_a.name}, SECINFO {area_a.flags:#x}), B adds "
                f"{offset_b:#x} ({area_b.name}, SECINFO {area_b.flags:#x})")
        if data_a == data_b:
            continue
        byte = next(i for i in range(PAGE_SIZE) if data_a[i] != data_b[i])
        chunk = byte - byte % CHUNK
        (where_a, text_a), (where_b, text_b) = (_where(area_a, offset_a + byte, a),
                                                _where(area_b, offset_b + byte, b))
        detail = f"first differing byte {offset_a + byte:#x}: "
        detail += where_a if where_a == where_b else f"A {where_a}, B {where_b}"
        if text_a or text_b:
            detail += f": A {text_a!r}, B {text_b!r}"
        return RecordDifference(index + 1 + chunk // CHUNK, "EEXTEND", offset_a + chunk,
                                area_a.name, detail)
    return None


# ---- the comparison --------------------------------------------------------------------------

def explain(a: EnclaveBuild, b: EnclaveBuild) -> Explanation:
    """Everything that differs between two builds, as far as what each side holds tells."""
    result = Explanation(a, b)
    for build in (a, b):
        if (build.manifest is not None and build.sigstruct is not None
                and build.sigstruct.enclave_hash != build.mr_enclave):
            result.notes.append(
                f"{build.source}: {build.sig_path} does not match {build.manifest_path} "
                f"(its ENCLAVEHASH is {build.sigstruct.enclave_hash.hex()}, the manifest "
                f"measures {build.mr_enclave.hex()}): compared by the manifest's measurement")
    result.enclave = _changes(_enclave_fields(a), _enclave_fields(b))
    if a.sigstruct is not None and b.sigstruct is not None:
        result.sigstruct = _changes(_sigstruct_fields(a.sigstruct), _sigstruct_fields(b.sigstruct))
    if a.manifest is not None and b.manifest is not None:
        result.manifest_keys = _manifest_keys(a.manifest, b.manifest)
        result.trusted_files = _trusted_files(a.manifest, b.manifest)
        result.layout = _layout(a, b)
        result.first_difference = first_record_difference(a, b)
    elif not result.equal:
        result.notes.append("without both manifests the measurement cannot be taken apart: "
                            "compare the .manifest.sgx files or build directories to see "
                            "which keys, files and pages differ")
    return result
