"""Gramine size strings: a number with an optional K, M or G suffix ("256K", "1G", "4096")."""

from __future__ import annotations

from pylos.errors import InputError

_SCALE = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(value: str | int, key: str) -> int:
    """Bytes in a size string; `key` names the manifest key in the error message."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        number, scale = value, 1
        if value[-1:] in _SCALE:
            number, scale = value[:-1], _SCALE[value[-1]]
        # ASCII digits only ("²".isdigit() is true), and few enough for int() and for memory.
        if number.isascii() and number.isdigit() and len(number) <= 20:
            return int(number) * scale
    raise InputError(
        f"{key}: invalid size {value!r} (expected a number with an optional K, M or G suffix)"
    )
