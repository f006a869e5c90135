"""Typed keyword parameters: what a component accepts, and checking a recipe table against it.

A component declares its parameters as keyword arguments with annotations and
defaults. ``Annotated[float, Range(gt=0)]`` adds a range, ``Literal["a", "b"]`` a set
of choices; an ``Args:`` section in the class docstring documents each one.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from gantool.errors import ParamError


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds for a numeric parameter: ``Annotated[int, Range(ge=1)]``.

    A float parameter is always finite (inf and NaN are valid TOML, and an infinite
    learning rate trains NaN silently); ``allow_inf=True`` marks one meant to be
    unbounded, which then accepts inf and -inf (never NaN) within its bounds.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    allow_inf: bool = False

    def check(self, value) -> str | None:
        for bound, ok, word in (
            (self.ge, lambda b: value >= b, ">="),
            (self.gt, lambda b: value > b, ">"),
            (self.le, lambda b: value <= b, "<="),
            (self.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                return f"must be {word} {_number(bound)}, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class HeightWidth:
    """An image size: an int (a square side) or [height, width]; every side in ``ge``..``le``.

    ``Annotated[int | tuple[int, int], HeightWidth(le=4096)]``. An int stays an int (so a
    square recipe means exactly what it always did); an array becomes a tuple (height, width).
    """

    ge: int = 1
    le: int = 4096

    def describe(self) -> str:
        return f"an int or [height, width] of ints in {self.ge}..{_number(self.le)}"

    def coerce(self, value) -> tuple[Any, str | None]:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, Range(ge=self.ge, le=self.le).check(value)
        if (isinstance(value, list | tuple) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and self.ge <= v <= self.le for v in value)):
            return tuple(value), None
        return value, f"must be {self.describe()}, got {value!r}"


def _number(bound) -> str:
    """An int bound exactly, grouped as TOML allows (1_048_576; not 1.04858e+06); a float one short."""
    if isinstance(bound, int):
        return f"{bound:_}" if abs(bound) >= 10_000 else str(bound)
    return f"{bound:g}"


@dataclasses.dataclass
class Param:
    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def describe_type(annotation) -> str:
    """A short human name for an annotation: 'int >= 1', "'nearest' | 'bilinear'"."""
    base, rng = _unwrap(annotation)
    if isinstance(rng, HeightWidth):
        return rng.describe()
    origin = get_origin(base)
    if origin is Literal:
        text = " | ".join(repr(a) for a in get_args(base))
    elif origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        text = " | ".join(describe_type(a) for a in get_args(base) if a is not type(None))
    elif origin in (list, tuple):
        inner = ", ".join(describe_type(a) for a in get_args(base) if a is not Ellipsis)
        text = f"{origin.__name__}[{inner}]"
    else:
        text = getattr(base, "__name__", str(base))
    if rng is not None:
        text += "".join(f" {w} {_number(b)}" for w, b in ((">=", rng.ge), (">", rng.gt), ("<=", rng.le), ("<", rng.lt))
                        if b is not None)
    return text


def parameters(factory) -> tuple[list[Param], bool]:
    """The keyword parameters of a class or callable, and whether it takes ``**kwargs``."""
    if inspect.isclass(factory) and _inherits_module_init(factory):
        return [], False  # nn.Module's own (*args, **kwargs) takes no recipe keys
    target = factory if dataclasses.is_dataclass(factory) else factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    docs = _arg_docs(inspect.getdoc(factory) or "")
    params, var_kw = [], False
    for p in inspect.signature(factory).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(Param(p.name, hints.get(p.name, Any), p.default, docs.get(p.name, "")))
    return params, var_kw


def _inherits_module_init(cls) -> bool:
    """A torch Module subclass without an ``__init__`` of its own (checked by name: no torch import here)."""
    init = cls.__init__
    return getattr(init, "__module__", None) == "torch.nn.modules.module" and init.__qualname__ == "Module.__init__"


def check_value(annotation, value) -> tuple[Any, str | None]:
    """Coerce a TOML value to ``annotation``; returns (value, problem or None)."""
    base, rng = _unwrap(annotation)
    if isinstance(rng, HeightWidth):
        return rng.coerce(value)
    if rng is not None and rng.allow_inf and isinstance(value, float) and math.isinf(value):
        return value, rng.check(value)  # explicitly unbounded: inf passes, the bounds still apply
    value, problem = _coerce(base, value)
    if problem is None and rng is not None:
        problem = rng.check(value)
    return value, problem


def validate(factory, table: dict, *, injected=()) -> dict:
    """Check a recipe table against ``factory``'s signature; returns coerced kwargs.

    Raises ParamError naming the key; the caller adds the file and table.
    """
    params, var_kw = parameters(factory)
    by_name = {p.name: p for p in params}
    out = {}
    for key, value in table.items():
        if key in injected:
            raise ParamError(key, "set by the engine from the dataset; remove it from the recipe")
        p = by_name.get(key)
        if p is None:
            if var_kw:
                out[key] = value
                continue
            known = [n for n in by_name if n not in injected]
            raise ParamError(key, f"unknown parameter{suggest(key, known)}")
        coerced, problem = check_value(p.annotation, value)
        if problem:
            expected = describe_type(p.annotation)
            raise ParamError(key, problem if expected in problem else f"{problem} (expected {expected})")
        out[key] = coerced
    missing = [p.name for p in params if p.required and p.name not in out and p.name not in injected]
    if missing:
        raise ParamError(missing[0], f"required parameter is missing; add {missing[0]} = ...")
    return out


def suggest(word: str, choices) -> str:
    """'; did you mean 'x'?' or, with no close match, the list of valid names."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(choices)}" if choices else ""


def _unwrap(annotation):
    rng = None
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        rng = next((e for e in extras if isinstance(e, Range | HeightWidth)), None)
        return base, rng
    return annotation, rng


def _coerce(base, value):
    origin = get_origin(base)
    if base is Any or base is inspect.Parameter.empty:
        return value, None
    if origin is Literal:
        allowed = get_args(base)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value, None
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        return value, f"{value!r} is not allowed" + (f"; did you mean {close[0]!r}?" if close else "")
    if origin is Union or type(base).__name__ == "UnionType":
        problems = []
        for option in get_args(base):
            if option is type(None):
                continue
            coerced, problem = _coerce(*_unwrap(option)[:1], value)
            if problem is None:
                return coerced, None
            problems.append(problem)
        return value, problems[0] if problems else f"unexpected value {value!r}"
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return value, f"expected an array, got {_toml_type(value)} {value!r}"
        args = [a for a in get_args(base) if a is not Ellipsis]
        homogeneous = origin is list or (len(get_args(base)) == 2 and get_args(base)[1] is Ellipsis)
        if not homogeneous and len(args) != len(value):
            return value, f"expected an array of {len(args)} values, got {len(value)}"
        items = []
        for i, item in enumerate(value):
            ann = args[0] if homogeneous and args else (args[i] if args else Any)
            coerced, problem = check_value(ann, item)
            if problem:
                return value, f"item {i}: {problem}"
            items.append(coerced)
        return origin(items), None
    if base is bool:
        return value, None if isinstance(value, bool) else f"expected true or false, got {_toml_type(value)} {value!r}"
    if base is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return value, f"expected an integer, got {_toml_type(value)} {value!r}"
        if not -(2**63) <= value < 2**63:  # TOML integers are 64-bit; torch and the OS take no more
            return value, f"must fit in 64 bits (-2**63 .. 2**63-1), got {value!r}"
        return value, None
    if base is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return value, f"expected a number, got {_toml_type(value)} {value!r}"
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            return value, "expected a finite number, got an integer too large for a float"
        if not math.isfinite(number):  # NaN or inf: never meant, unless Range(allow_inf=True)
            return value, f"must be a finite number, got {value!r}"
        return number, None
    if base is str:
        return value, None if isinstance(value, str) else f"expected a string, got {_toml_type(value)} {value!r}"
    if isinstance(base, type) and not isinstance(value, base):
        return value, f"expected {base.__name__}, got {_toml_type(value)} {value!r}"
    return value, None


def _toml_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _arg_docs(doc: str) -> dict[str, str]:
    """Parse a Google-style ``Args:`` section into {name: text}."""
    out, current, in_args = {}, None, False
    for line in doc.splitlines():
        if re.match(r"^(Args|Arguments|Parameters):\s*$", line.strip()):
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break
        m = re.match(r"^\s{2,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out
