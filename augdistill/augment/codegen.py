"""Constructor calls that can be built into objects *or* printed as pasteable Python source.

The exporters describe a pipeline once, as a tree of :class:`Call` nodes; ``to_torchvision()``
builds it and ``python_snippet()`` prints it, so the snippet and the pipeline cannot disagree.
Values are written with ``repr``, which round-trips every float exactly.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping

__all__ = ["Call", "Name", "resolve", "definitions_source", "imports_source"]


@dataclass(frozen=True)
class Name:
    """A dotted name looked up in the namespace, e.g. ``v2.InterpolationMode.BILINEAR``."""

    dotted: str

    def build(self, namespace: Mapping[str, Any]) -> Any:
        return resolve(self.dotted, namespace)

    def code(self) -> str:
        return self.dotted


@dataclass(frozen=True)
class Call:
    """``func(*args, **kwargs)`` with ``func`` a dotted name; arguments may nest calls, names and lists.

    Example:
        >>> node = Call("dict", kwargs={"p": 0.1, "rows": [Call("list"), Call("list", ((1, 2),))]})
        >>> print(node.code())
        dict(p=0.1, rows=[
            list(),
            list((1, 2)),
        ])
        >>> node.build({"dict": dict, "list": list})
        {'p': 0.1, 'rows': [[], [1, 2]]}
    """

    func: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, namespace: Mapping[str, Any]) -> Any:
        """Instantiate the tree with the names of ``namespace``."""
        return resolve(self.func, namespace)(*(_build(a, namespace) for a in self.args),
                                             **{k: _build(v, namespace) for k, v in self.kwargs.items()})

    def code(self, indent: int = 0) -> str:
        """Python source of the call; with several nested calls among the arguments, one argument a line."""
        values = (*self.args, *self.kwargs.values())
        inner = indent + 1 if _multiline(values) else indent
        parts = [_code(a, inner) for a in self.args] + [f"{k}={_code(v, inner)}" for k, v in self.kwargs.items()]
        return f"{self.func}({_join(parts, indent, _multiline(values))})"

    def names(self) -> set[str]:
        """First components of every dotted name used in the tree (what the namespace must define)."""
        found = {self.func.split(".")[0]}
        for value in (*self.args, *self.kwargs.values()):
            found |= _names(value)
        return found


def _build(value: Any, namespace: Mapping[str, Any]) -> Any:
    if isinstance(value, (Call, Name)):
        return value.build(namespace)
    if isinstance(value, list):
        return [_build(v, namespace) for v in value]
    if isinstance(value, tuple):
        return tuple(_build(v, namespace) for v in value)
    return value


def _multiline(values: Any) -> bool:
    """Several of ``values`` hold calls: lay them out one a line."""
    return sum(bool(_names(v)) and not isinstance(v, Name) for v in values) > 1


def _join(parts: list[str], indent: int, multiline: bool) -> str:
    if not multiline:
        return ", ".join(parts)
    pad = "    " * (indent + 1)
    return "".join(f"\n{pad}{part}," for part in parts) + "\n" + "    " * indent


def _code(value: Any, indent: int) -> str:
    if isinstance(value, (Call, Name)):
        return value.code(indent) if isinstance(value, Call) else value.code()
    if isinstance(value, (list, tuple)):
        multiline = _multiline(value)
        body = _join([_code(v, indent + 1 if multiline else indent) for v in value], indent, multiline)
        if isinstance(value, list):
            return f"[{body}]"
        return f"({body}{',' if len(value) == 1 and not multiline else ''})"
    return repr(value)


def _names(value: Any) -> set[str]:
    if isinstance(value, Call):
        return value.names()
    if isinstance(value, Name):
        return {value.dotted.split(".")[0]}
    if isinstance(value, (list, tuple)):
        return set().union(*(_names(v) for v in value))
    return set()


def resolve(dotted: str, namespace: Mapping[str, Any]) -> Any:
    """The object ``dotted`` names, its first component taken from ``namespace``."""
    head, *rest = dotted.split(".")
    obj = namespace[head]
    for attr in rest:
        obj = getattr(obj, attr)
    return obj


def _package_globals(obj: Any) -> list[Any]:
    """Functions and classes of this package that ``obj``'s source uses by name (bases included)."""
    module = inspect.getmodule(obj)
    used = {node.id for node in ast.walk(ast.parse(inspect.getsource(obj))) if isinstance(node, ast.Name)}
    found = [getattr(module, n) for n in sorted(used) if n in vars(module)]
    return [f for f in found if (inspect.isclass(f) or inspect.isfunction(f)) and f is not obj
            and f.__module__.startswith("augdistill.")]


def definitions_source(objects: list[Callable[..., Any]]) -> str:
    """Source of ``objects`` and of every package function/class they use, dependencies first."""
    ordered: list[Any] = []

    def visit(obj: Any) -> None:
        if obj in ordered:
            return
        for dep in _package_globals(obj):
            visit(dep)
        ordered.append(obj)

    for obj in objects:
        visit(obj)
    return "\n\n".join(inspect.getsource(obj).rstrip() for obj in ordered)


def imports_source(module: ModuleType) -> str:
    """The module's top-level import statements, less this package's own (``__future__`` ones first)."""
    source = inspect.getsource(module)
    lines = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("augdistill"):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.append(ast.get_source_segment(source, node))
    return "\n".join(lines)
