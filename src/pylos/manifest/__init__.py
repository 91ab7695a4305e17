"""Gramine-compatible manifests: templates, schema, defaults and trusted-file expansion."""

from pylos.manifest.manifest import Manifest
from pylos.manifest.schema import check_manifest, validation_errors
from pylos.manifest.sizes import parse_size
from pylos.manifest.template import parse_defines, render

__all__ = ["Manifest", "check_manifest", "parse_defines", "parse_size", "render",
           "validation_errors"]
