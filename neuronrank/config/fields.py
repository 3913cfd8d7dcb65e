"""A request field: its default and what the command line, the app and validation read from it.

`param(default, *flags, ...)` declares a field of a request dataclass; `add_arguments` makes the CLI's flags
from the fields, `spec` gives a page its widget's default, bounds, choices, help and label, `check_bounds`
is the generic validation every field declares. Imports no torch.
"""

from __future__ import annotations

import argparse
import builtins
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from neuronrank.errors import UserError


# what a path-valued field holds (data.inputs.confine_params confines each kind): a model spec (a local path
# when it looks like one, else a hub id or the alias), a text source (a path after file:), a folder, a
# study storage URL (a file for SQLite)
PATH_KINDS = ("model", "source", "dir", "storage")


def param(default: Any, *flags: str, help: str = "", lo=None, hi=None, choices=None, type=None,
          label: str | None = None, noun: str | None = None, path: str | None = None, repeat: bool = False):
    """A request field: its default and what the CLI, the app and validate() need to know of it.
    `flags` empty: not a command-line flag; `label` names the app's widget (a trailing "(...)" is a hint,
    not part of the name); `noun` names the field in messages ("unknown <noun> ..."); `path`: the field
    names something on disk (one of PATH_KINDS) and a queued run confines it; `repeat`: a comma-separated
    list whose flag may also be given several times (the values are joined with commas)."""
    if path is not None and path not in PATH_KINDS:
        raise ValueError(f"unknown path kind {path!r}")
    meta = dict(flags=flags, help=help, lo=lo, hi=hi, choices=choices, label=label, noun=noun, path=path,
                repeat=repeat, type=type or (builtins.type(default) if isinstance(default, (int, float)) else str))
    return field(default=default, metadata=meta)


def path_fields(cls) -> dict[str, str]:
    """{field name: path kind} of every path-valued field of a request class: the one list a queued
    run's confinement walks (jobs.submit), so a new path field is confined by declaring it."""
    return {f.name: f.metadata["path"] for f in fields(cls) if f.metadata and f.metadata.get("path")}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    default: Any
    flags: tuple
    help: str
    lo: Any
    hi: Any
    choices: tuple | None
    label: str

    @property
    def name_in_app(self) -> str:
        """The widget's name: the label without its trailing "(...)" hint ("Eval windows (0 = all)": "Eval
        windows")."""
        return self.label.split(" (")[0] if self.label.endswith(")") else self.label


def spec(cls, name: str) -> FieldSpec:
    """Default, bounds, choices, help and label of one field (the pages' widgets use these)."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    m = f.metadata
    default = f.default if f.default is not MISSING else None
    return FieldSpec(name, default, m["flags"], m["help"], m["lo"], m["hi"], m["choices"], m["label"] or name)


def check_bounds(req) -> None:
    """The generic checks every field declares: type, lower and upper bound, choices."""
    for f in fields(req):
        m, v = f.metadata, getattr(req, f.name)
        if not m or v is None:
            continue
        if m["choices"] and v not in m["choices"]:
            raise UserError(f"unknown {m['noun'] or f.name} {v!r}; choose one of {', '.join(map(str, m['choices']))}",
                            field=f.name)
        lo, hi = m["lo"], m["hi"]
        if lo is None and hi is None:
            continue
        try:
            num = float(v)
        except (TypeError, ValueError) as e:
            raise UserError(f"{f.name} must be a number (got {v!r})", field=f.name) from e
        if m["type"] is int and (not math.isfinite(num) or num != int(num)):
            raise UserError(f"{f.name} must be a whole number (got {v!r})", field=f.name)
        if (lo is not None and not num >= lo) or (hi is not None and not num <= hi):
            if lo is not None and hi is not None:
                raise UserError(f"{f.name} must be between {lo} and {hi} (got {v})", field=f.name)
            if lo is not None:
                raise UserError(f"{f.name} must be at least {lo} (got {v})", field=f.name)
            raise UserError(f"{f.name} must be at most {hi} (got {v})", field=f.name)


# ----------------------------------------------------------------------------------------------
# values given as text


def parse_floats(text: str | list | tuple) -> tuple[float, ...]:
    """Comma- (or semicolon-) separated numbers -> sorted distinct floats: the one list parser."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [v for v in str(text).replace(";", ",").split(",") if v.strip()]
    try:
        return tuple(sorted({round(float(v), 6) for v in items}))
    except (TypeError, ValueError) as e:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from e


class RangeError(UserError, argparse.ArgumentTypeError):
    """A malformed LO,HI (argparse shows an ArgumentTypeError's own message)."""


def parse_range(text: str | list | tuple) -> tuple[float, float]:
    """"LO,HI" (or a pair) -> (lo, hi) as given: a reversed range is an error, not silently swapped."""
    items = list(text) if isinstance(text, (list, tuple)) else [v for v in str(text).split(",")]
    try:
        pair = tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise RangeError(f"a range is two numbers LO,HI (got {text!r})") from e
    if len(pair) != 2:
        raise RangeError(f"a range is two numbers LO,HI (got {text!r})")
    return pair


# ----------------------------------------------------------------------------------------------
# the command line reads the fields


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """One argparse flag per field of `cls` that has flags, dest = the field name, default = its default."""
    for f in fields(cls):
        m = f.metadata
        if not m or not m["flags"] or f.name in skip:
            continue
        kwargs = dict(dest=f.name, default=f.default, help=m["help"] or None)
        if m["choices"]:
            kwargs["choices"] = list(m["choices"])
        t = m["type"]
        if t is not str:
            kwargs["type"] = t
        if m.get("repeat"):
            kwargs["action"] = _JoinAction
        parser.add_argument(*m["flags"], **kwargs)


class _JoinAction(argparse.Action):
    """A repeatable flag of a comma-separated field: `--layers 0-9 --layers 10-19` = `--layers 0-9,10-19`."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        fresh = f"_{self.dest}_given"
        joined = values if before is None or not getattr(namespace, fresh, False) else f"{before},{values}"
        setattr(namespace, fresh, True)  # the first use replaces the default, later ones add to it
        setattr(namespace, self.dest, joined)


def from_args(cls, args: argparse.Namespace, **over):
    """A request from parsed arguments (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    values.update(over)
    return cls(**values)
