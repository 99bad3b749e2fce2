"""Typed config machinery shared by every component's config: sections, checks, loading and field docs.

A component's config is a kw-only dataclass deriving from `Section`. Field types say what a value may be:
`Literal[...]` for an enumerated setting, `Annotated[int, Range(lo=1)]` (aliases `PosInt`, `Fraction`, ...) for
a bounded number; `check()` holds cross-field rules. Every check runs when the dataclass is built, from YAML or
from code, so a bad value fails at load, before any heavy import, with one error naming its dotted key. The
string literal under a field is its documentation (shown by `--help`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file, value or override that does not fit the tree; the message names the bad key."""


class FieldError(ConfigError):
    """A bad value of one field; `key` is relative to its section (the loader prefixes the section path)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


@dataclass(frozen=True)
class Range:
    """A bound on a number: lo <= x (lo < x when lo_open) and x <= hi; None leaves that side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def ok(self, x: float) -> bool:
        low = self.lo is None or (x > self.lo if self.lo_open else x >= self.lo)
        return low and (self.hi is None or x <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"<= {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


PosInt = Annotated[int, Range(lo=1)]
NonNegInt = Annotated[int, Range(lo=0)]
PosFloat = Annotated[float, Range(lo=0, lo_open=True)]
NonNegFloat = Annotated[float, Range(lo=0)]
Fraction = Annotated[float, Range(lo=0, hi=1)]
Port = Annotated[int, Range(lo=0, hi=65535)]


@dataclass(kw_only=True)
class Section:
    """Base of every config section: checks each field against its type's constraints, then `check()`."""

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                constrain(value, hints[f.name], f.name)
        self.check()

    def check(self) -> None:
        """Cross-field rules of this section; raise FieldError(key, problem)."""


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def constrain(value: Any, tp: Any, key: str) -> None:
    """Raise FieldError when `value` breaks a Literal or Range of `tp` (types themselves are the loader's job)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        constrain(value, base, key)
        for mark in marks:
            if isinstance(mark, Range) and _is_number(value) and not mark.ok(value):
                raise FieldError(key, f"must be {mark}, got {value!r}")
    elif origin is Literal:
        if value not in typing.get_args(tp):
            raise FieldError(key, f"{value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
    elif _is_union(tp):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is not None and len(arms) == 1:
            constrain(value, arms[0], key)
    elif origin is list and isinstance(value, list):
        (arm,) = typing.get_args(tp)
        for i, v in enumerate(value):
            constrain(v, arm, f"{key}[{i}]")
    elif origin is dict and isinstance(value, dict):
        _, arm = typing.get_args(tp)
        for k, v in value.items():
            constrain(v, arm, f"{key}.{k}")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def convert(value: Any, tp: Any, key: str) -> Any:
    """`value` (parsed YAML) as type `tp`: sections built, ints widened to float; else ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return convert(value, typing.get_args(tp)[0], key)
    if origin is Literal:
        return value  # membership is checked by the section
    if _is_union(tp):
        if value is None and type(None) in typing.get_args(tp):
            return None
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return convert(value, arm, key)
            except ConfigError as e:
                errors.append(e)
        if len(arms) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: expected {describe_type(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arm,) = typing.get_args(tp)
        return [convert(v, arm, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {convert(k, kt, key): convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and _is_number(value):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    if tp is str and _is_number(value):
        return str(value)
    if tp is Any:
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """An instance of section `cls` from a mapping; unknown keys, bad types and failed checks name the key."""
    hints = type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(names))})")
        kwargs[k] = convert(v, hints[k], key)
    try:
        return cls(**kwargs)
    except FieldError as e:
        key = f"{prefix}.{e.key}" if prefix else e.key
        raise ConfigError(f"{key}: {e.problem}") from None


def describe_type(tp: Any) -> str:
    """A short human form of a field type: 'int >= 1', 'grid|2d|full', 'list[int]', 'str or null'."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        return " ".join([describe_type(base), *(str(m) for m in marks if isinstance(m, Range))])
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(describe_type(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: the string literal written under it in the class body} (first paragraph, one line)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is Section:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.strip().split("\n\n")[0].split())
    return docs


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file or a syntax error is one ConfigError naming file and line."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML error: {problem}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return tree


def apply_override(tree: dict, item: str) -> None:
    """Set `key.sub=value` in a nested dict; the value is parsed as YAML (empty means null)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.strip()
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        raise ConfigError(f"override '{dotted}': value {raw!r} is not valid YAML") from None
    set_key(tree, dotted, value)


def set_key(tree: dict, dotted: str, value: Any) -> None:
    """tree[a][b] = value for dotted key 'a.b', creating sections as needed."""
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def load(root: type, path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Any:
    """Build `root` from the YAML at `path` (or the defaults) plus dotted overrides; every check runs."""
    tree = read_yaml(path) if path is not None else {}
    for item in overrides:
        apply_override(tree, item)
    return build(root, tree)
