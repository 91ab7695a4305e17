"""A pure-Python package: what pylos python init trusts of it is what the app imports."""


def hello(name: str) -> str:
    return f"hello, {name}"
