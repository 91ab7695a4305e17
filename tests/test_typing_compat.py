"""pylos.typing_compat: NamedTuple declarations as typing's, without importing typing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pylos.typing_compat import TYPE_CHECKING, NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str | None = None

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    @classmethod
    def origin(cls) -> Point:
        return cls(0)


def test_fields_defaults_methods_and_docstring_are_the_class_bodys():
    p = Point(3, -4)
    assert p == (3, -4, None) and isinstance(p, tuple)
    assert (p.x, p.y, p.label) == (3, -4, None)
    assert p.norm1 == 7 and Point.origin() == (0, 0, None)
    assert Point._fields == ("x", "y", "label")
    assert Point._field_defaults == {"y": 0, "label": None}
    assert p._replace(label="a") == (3, -4, "a")
    assert Point.__doc__ == "A point." and Point.__module__ == __name__
    assert Point.__annotations__ == {"x": "int", "y": "int", "label": "str | None"}
    assert repr(p) == "Point(x=3, y=-4, label=None)"
    with pytest.raises(AttributeError):
        p.x = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_bad_declarations_are_refused_as_typing_refuses_them():
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(NamedTuple):
            a: int = 1
            b: int
    with pytest.raises(AttributeError, match="_replace"):
        class Overrides(NamedTuple):
            a: int

            def _replace(self):  # type: ignore[override]
                return self


def test_type_checking_is_false_and_typing_is_not_imported():
    assert TYPE_CHECKING is False
    code = "import sys, pylos.typing_compat; print('typing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
