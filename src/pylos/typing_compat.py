"""What the runtime's modules take from `typing`, without importing it.

`typing` (with `re`, which it imports) costs every `pylos run` ~8 ms of start-up on the
2-core machine, and the runtime needs only two things from it at run time: the
`TYPE_CHECKING` flag and `NamedTuple` class declarations. Type checkers read the names
from `typing` (they take any `TYPE_CHECKING` as true); at run time they come from here.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False

# What namedtuple defines itself: a class body may not override it (as typing.NamedTuple).
_RESERVED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                       "_field_defaults", "_make", "_replace", "_asdict", "__dict__",
                       "__weakref__", "__module__"})


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict) -> type:
        if not bases:  # NamedTuple itself
            return super().__new__(mcs, name, bases, namespace)
        fields = tuple(namespace.get("__annotations__", {}))
        defaults = [namespace[field] for field in fields if field in namespace]
        if any(field not in namespace for field in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        cls = namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
        for key, value in namespace.items():
            if key in _RESERVED:
                if key not in ("__module__", "__dict__", "__weakref__"):
                    raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
            elif key not in fields:
                setattr(cls, key, value)
        return cls


class NamedTuple(metaclass=_NamedTupleMeta):
    """`class Point(NamedTuple): x: int; y: int = 0`, as with typing.NamedTuple: a
    collections.namedtuple with the body's fields, defaults, methods and docstring."""
