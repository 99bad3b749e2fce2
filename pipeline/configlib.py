"""Config machinery on pydantic v2: the section base, YAML with file/line errors, dotted overrides, one-line errors.

A component's config is a `Section` (a pydantic model: unknown keys refused, exact types, the docstring under a
field is its documentation, shown by `--help`). `Literal[...]` types an enumerated setting, `PosInt`, `Fraction`,
... (`Field(ge=...)`) a bounded number, and a `model_validator` holds cross-field rules, raising
`FieldError(key, problem)`. Validation is pydantic's; this module only turns its first error into one line naming
the dotted key, so a bad value fails at load, before any heavy import, whether the section is built from YAML or
from code.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

import annotated_types as at
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A config file, value or override that does not fit the tree; the message names the bad key."""


class FieldError(ConfigError):
    """A bad value of one field; `key` is relative to the section that raised it (the message prefixes its path)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Port = Annotated[int, Field(ge=0, le=65535)]


class Section(BaseModel):
    """Base of every config section: exact types, no unknown keys, field docstrings as descriptions."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True, validate_default=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:  # built in code: the same one line as from YAML
            raise error_of(e.errors()[0], type(self)) from None

    # This __init__ only validates (as BaseModel's): pydantic may validate nested sections without calling it, and
    # then their errors keep their place in the tree (pydantic marks its own and RootModel's __init__ the same way).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _marks(marks: Iterable[Any]) -> list[Any]:
    """The annotated-types constraints among Annotated extras (a Field(ge=1) holds its own)."""
    out: list[Any] = []
    for m in marks:
        out += m.metadata if isinstance(m, FieldInfo) else [m]
    return out


def _strip(tp: Any, meta: list[Any]) -> tuple[Any, list[Any]]:
    """Annotated[X, ...] -> X plus its constraints; X | None -> X."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp, *marks = typing.get_args(tp)
            meta = meta + _marks(marks)
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            arms = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(arms) != 1:
                return tp, meta
            tp = arms[0]
        else:
            return tp, meta


def node_at(root: type, loc: Iterable[Any]) -> tuple[Any, list[Any]]:
    """(type, constraints) of the value at `loc` (field names, list indices, dict keys) under the model `root`."""
    tp, meta = root, []
    for part in loc:
        tp, meta = _strip(tp, meta)
        if is_section(tp):
            f = tp.model_fields[part]
            tp, meta = f.annotation, list(f.metadata)
        else:
            tp, meta = typing.get_args(tp)[-1], []  # list[X] or dict[K, X]
    return _strip(tp, meta)


def bounds(meta: Iterable[Any]) -> str:
    """'>= 1', '> 0', 'in [0, 1]' from annotated-types constraints ('' when unbounded)."""
    lo = [(">=", m.ge) if isinstance(m, at.Ge) else (">", m.gt) for m in meta if isinstance(m, (at.Ge, at.Gt))]
    hi = [("<=", m.le) if isinstance(m, at.Le) else ("<", m.lt) for m in meta if isinstance(m, (at.Le, at.Lt))]
    if lo and hi:
        (low, x), (high, y) = lo[0], hi[0]
        return f"in {'[' if low == '>=' else '('}{x:g}, {y:g}{']' if high == '<=' else ')'}"
    return " ".join(f"{op} {x:g}" for op, x in lo + hi)


def describe_type(tp: Any, meta: Iterable[Any] = ()) -> str:
    """A short human form of a field type: 'int >= 1', 'grid|2d|full', 'list[int]', 'str or null'."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        return describe_type(base, [*meta, *_marks(marks)])
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(describe_type(a) for a in typing.get_args(tp))}]"
    name = getattr(tp, "__name__", str(tp))
    return f"{name} {bounds(meta)}".strip()


_EXPECTED = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
             "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}


def dotted(loc: Iterable[Any]) -> str:
    """('model', 'widths', 1) -> 'model.widths[1]'."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def error_of(err: dict, root: type) -> ConfigError:
    """One pydantic error (of validating `root`) as the one-line error naming its dotted key."""
    loc, kind, value = err["loc"], err["type"], err.get("input")
    key = dotted(loc)
    if kind == "extra_forbidden":
        known = ", ".join(sorted(node_at(root, loc[:-1])[0].model_fields))
        return ConfigError(f"unknown config key '{key}' (known: {known})")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return FieldError(dotted([*loc, cause.key]), cause.problem)
    if cause is not None:
        return FieldError(key, str(cause))
    tp, meta = node_at(root, loc)
    if kind == "literal_error":
        return FieldError(key, f"{value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        shown = float(value) if tp is float else value
        return FieldError(key, f"must be {bounds(meta)}, got {shown!r}")
    if kind in _EXPECTED:
        return FieldError(key, f"expected {_EXPECTED[kind]}, got {value!r}")
    return FieldError(key, f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {value!r}")


def build(root: type, tree: dict) -> Any:
    """An instance of `root` from a mapping; the first problem is one ConfigError naming its dotted key."""
    try:
        return root.model_validate(tree)
    except ValidationError as e:
        raise error_of(e.errors()[0], root) from None


class _Loader(yaml.SafeLoader):
    """YAML with the 1.2 float rule: 3e-4 (no dot) is a number, as every user means it, not a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file or a syntax error is one ConfigError naming file and line."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        tree = parse_yaml(text)
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
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = parse_yaml(raw) if raw != "" else None
    except yaml.YAMLError:
        raise ConfigError(f"override '{key}': value {raw!r} is not valid YAML") from None
    set_key(tree, key, value)


def set_key(tree: dict, key: str, value: Any) -> None:
    """tree[a][b] = value for dotted key 'a.b', creating sections as needed."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
    node[parts[-1]] = value


def load_tree(root: type, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Any:
    """Build `root` from the YAML at `path` (or the defaults) plus dotted overrides; every check runs."""
    tree = read_yaml(path) if path is not None else {}
    for item in overrides:
        apply_override(tree, item)
    return build(root, tree)


def to_dict(cfg: BaseModel) -> dict:
    """A config tree as plain YAML-able data (budgets as their text)."""
    return cfg.model_dump()


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Write a resolved config as YAML (it loads back to an equal tree)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
