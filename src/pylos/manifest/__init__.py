"""Gramine-compatible manifests: templates, schema, defaults and trusted-file expansion."""

from __future__ import annotations

from pylos.manifest.manifest import Manifest
from pylos.manifest.schema import check_manifest, validation_errors
from pylos.manifest.sizes import parse_size
from pylos.typing_compat import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Manifest", "check_manifest", "parse_defines", "parse_size", "render",
           "validation_errors"]


def __getattr__(name: str) -> Any:
    # Templates need Jinja2 (~20 ms to import); `pylos run` never renders, so load it on use.
    if name in ("parse_defines", "render"):
        from pylos.manifest import template

        return getattr(template, name)
    raise AttributeError(name)
