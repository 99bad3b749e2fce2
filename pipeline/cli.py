"""The shared command line: each entry point declares its flags in one table (`Command`), and `parse()` turns argv
into the typed config tree (`RunConfig` by default: the tree a run's YAML holds, data preparation's sections and the
pipeline's; this is where both are known).

Every command takes `--config FILE`, its table's flags, and dotted overrides `key.sub=value` anywhere among them.
A flag that names a config key is the same as that override (its help text is the field's documentation); a flag
without a key belongs to the command itself (returned in the namespace). A bad key, value, file or flag is one
line on stderr and exit status 2, before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from data_prep.config import RenderConfig, SynthConfig
from pipeline import configlib
from pipeline.config import Config
from pipeline.configlib import ConfigError


class RunConfig(Config):
    """The tree a run's YAML holds: data preparation's sections (synth, render) and the pipeline's."""

    synth: SynthConfig = Field(default_factory=SynthConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)


@dataclass(frozen=True)
class Flag:
    """One flag: `names` ("--alias", "-k"), the config key it sets (None: the command's own), and its kind."""

    names: tuple[str, ...]
    key: str | None = None
    kind: Literal["value", "switch", "repeat", "ignored"] = "value"
    help: str = ""
    metavar: str | None = None


def flag(*names: str, key: str, help: str = "", metavar: str | None = None) -> Flag:
    """A flag taking one value for config key `key`."""
    return Flag(names, key, "value", help, metavar)


def switch(*names: str, key: str | None = None, help: str = "") -> Flag:
    """A flag without a value: sets boolean config key `key` to true, or (no key) the command's own option."""
    return Flag(names, key, "switch", help)


def repeat(*names: str, key: str, help: str = "", metavar: str | None = None) -> Flag:
    """A flag that may be given several times; its values form the list of config key `key`."""
    return Flag(names, key, "repeat", help, metavar)


def ignored(*names: str, help: str = "") -> Flag:
    """A flag accepted and ignored (e.g. the deepspeed launcher's --local_rank)."""
    return Flag(names, None, "ignored", help)


@dataclass(frozen=True)
class Command:
    """An entry point's command line: its flags, the config sections its --help lists, and optional verbs."""

    prog: str
    description: str
    flags: tuple[Flag, ...] = ()
    sections: tuple[str, ...] = ()
    verbs: dict[str, tuple[Flag, ...]] = field(default_factory=dict)  # verb -> its own flags (besides `flags`)
    root: Any = RunConfig  # the config tree type


def _field(root: Any, key: str) -> tuple[Any, str, Any]:
    """(section class, field name, field info) of a dotted key of the tree `root`."""
    *path, name = key.split(".")
    cls = configlib.node_at(root, path)[0]
    return cls, name, cls.model_fields[name]


def _doc(info: Any) -> str:
    """A field's docstring as one line (its first paragraph)."""
    return " ".join((info.description or "").split("\n\n")[0].split())


def _help_for(root: Any, f: Flag) -> str:
    if f.help or f.key is None:
        return f.help
    _, _, info = _field(root, f.key)
    return f"{_doc(info)} [{f.key}: {configlib.describe_type(info.annotation, info.metadata)}]".strip()


def _epilog(root: Any, sections: tuple[str, ...]) -> str:
    """The config keys of `sections` with type, default and documentation (for --help)."""
    lines = ["dotted overrides KEY=VALUE may appear anywhere among the flags (values are YAML); keys:"]
    for section in sections:
        cls = configlib.node_at(root, [section])[0]
        defaults = cls().model_dump()
        for name, info in cls.model_fields.items():
            if configlib.is_section(info.annotation):
                continue
            kind = configlib.describe_type(info.annotation, info.metadata)
            lines.append(f"  {section}.{name} ({kind}; default {defaults[name]!r})")
            if info.description:
                lines.append(f"      {_doc(info)}")
    return "\n".join(lines)


def _add_flags(parser: argparse.ArgumentParser, root: Any, flags: tuple[Flag, ...]) -> None:
    for f in flags:
        if f.kind == "ignored":
            parser.add_argument(*f.names, default=None, help=argparse.SUPPRESS)
            continue
        dest = f"flag:{f.names[0]}"
        kw: dict[str, Any] = {"dest": dest, "help": _help_for(root, f)}
        if f.kind == "switch":
            kw.update(action="store_true", default=False if f.key is None else None)
        elif f.kind == "repeat":
            kw.update(action="append", default=None, metavar=f.metavar)
        else:
            kw.update(default=None, metavar=f.metavar or (f.key or f.names[0]).split(".")[-1].upper())
        parser.add_argument(*f.names, **kw)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage itself is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: Command) -> argparse.ArgumentParser:
    root = command.root
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=command.prog, description=command.description,
                                     epilog=_epilog(root, command.sections), formatter_class=fmt,
                                     allow_abbrev=False)
    targets = [(parser, ())]
    if command.verbs:
        sub = parser.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(command.verbs) + "}")
        targets = [(sub.add_parser(v, description=command.description, epilog=parser.epilog, formatter_class=fmt,
                                   prog=f"{command.prog} {v}", allow_abbrev=False), own) for v, own in command.verbs.items()]
    for p, own in targets:
        p.add_argument("--config", default=None, metavar="FILE", help="YAML config file (default: built-in defaults)")
        _add_flags(p, root, command.flags + tuple(own))
    return parser


def _raw_value(root: Any, key: str, raw: str) -> Any:
    """A flag's text as the field wants it: kept as text for a str field, else parsed as YAML."""
    _, _, info = _field(root, key)
    if _accepts_str(info.annotation):
        return raw
    import yaml

    try:
        return configlib.parse_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{key}: {raw!r} is not a valid value") from None


def _accepts_str(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _accepts_str(typing.get_args(tp)[0])
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(tp))
    if origin is list:
        return _accepts_str(typing.get_args(tp)[0])
    return tp is str


def _flag_values(root: Any, flags: tuple[Flag, ...], ns: argparse.Namespace) -> dict[str, Any]:
    """{config key: value} of the config flags that were given."""
    out = {}
    for f in flags:
        value = getattr(ns, f"flag:{f.names[0]}", None)
        if f.key is None or value is None:
            continue
        if f.kind == "switch":
            out[f.key] = True
        elif f.kind == "repeat":
            out[f.key] = [_raw_value(root, f.key, v) for v in value]
        else:
            out[f.key] = _raw_value(root, f.key, value)
    return out


def parse(command: Command, argv: list[str] | None = None) -> tuple[Any, argparse.Namespace]:
    """(config tree, namespace) from argv; a usage or config error exits 2 with one line on stderr.

    The namespace holds `verb` (for commands with verbs) and each key-less flag under its name without dashes
    (`--list` -> ns.list)."""
    root = command.root
    parser = build_parser(command)
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    flags = command.flags + tuple(command.verbs.get(getattr(ns, "verb", None), ()))
    try:
        tree = configlib.read_yaml(ns.config) if ns.config else {}
        for item in overrides:
            configlib.apply_override(tree, item)
        for key, value in _flag_values(root, flags, ns).items():  # a flag wins over the same dotted key
            configlib.set_key(tree, key, value)
        cfg = configlib.build(root, tree)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    for f in flags:
        if f.key is None and f.kind != "ignored":
            setattr(ns, f.names[0].lstrip("-").replace("-", "_"), getattr(ns, f"flag:{f.names[0]}"))
    return cfg, ns


def parse_cli(command: Command, argv: list[str] | None = None) -> Any:
    """The config tree alone (for commands whose flags all set config keys)."""
    return parse(command, argv)[0]
