"""Our own records (experiments, sensitivity results, fine-tuning runs) to JSON and back,
without pickle.

`encode` turns a dataclass into plain JSON values, field by field; `decode` rebuilds it
from the class's type hints, so only the classes those hints name can ever be made, and
each is made through its constructor (its checks run). A JSON value that does not fit
its field raises `CodecError`, naming the field. Tensors are not put in the JSON: a
state dict ({name: tensor}) is handed to `put`, which stores it and returns a reference,
and `get` reads it back from that reference.

Supported field types: None, bool, int, float, str, enums, `Plan` (its own JSON form),
dataclasses, `X | None` and other unions of these, tuple[X, ...], list[X], dict[str, X],
dict[str, Tensor] (a state dict), and Any (plain JSON, kept as it is).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor

from pruneviz.core.plan import Plan
from pruneviz.errors import PrunevizError

T = TypeVar("T")
Put = Callable[[dict[str, Tensor]], str]  # stores a state dict, returns its reference
Get = Callable[[str], dict[str, Tensor]]  # reads a state dict back from its reference
TENSORS = "$tensors"  # the JSON key of a state dict's reference


class CodecError(PrunevizError):
    """Saved data that does not fit the record it should make."""


def encode(value: object, put: Put) -> Any:
    """`value` as plain JSON values (state dicts stored by `put`)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Plan):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name), put)
                for f in dataclasses.fields(value) if f.init}
    if isinstance(value, tuple | list):
        return [encode(v, put) for v in value]
    if isinstance(value, dict):
        if value and all(isinstance(v, Tensor) for v in value.values()):
            return {TENSORS: put(value)}
        if not all(isinstance(k, str) for k in value):
            raise CodecError(f"only dicts with string keys can be saved, not {value!r:.80}")
        return {k: encode(v, put) for k, v in value.items()}
    raise CodecError(f"a {type(value).__name__} cannot be saved")


def decode(hint: Any, data: Any, get: Get, where: str = "the record") -> Any:
    """The value of type `hint` that `encode` made `data` from."""
    if hint is Any:
        return data
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _decode_union(hint, data, get, where)
    if hint is type(None):
        return _expect(data, data is None, "nothing", where)
    if hint is bool:
        return _expect(data, isinstance(data, bool), "true or false", where)
    if hint is int:
        return _expect(data, isinstance(data, int) and not isinstance(data, bool),
                       "a whole number", where)
    if hint is float:
        _expect(data, isinstance(data, int | float) and not isinstance(data, bool),
                "a number", where)
        return float(data)
    if hint is str:
        return _expect(data, isinstance(data, str), "text", where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise CodecError(f"{where}: {data!r:.60} is not a {hint.__name__}") from None
    if hint is Plan:
        try:
            return Plan.from_dict(data)
        except (PrunevizError, ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"{where}: not a plan ({exc})") from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, data, get, where)
    if origin in (tuple, list):
        _expect(data, isinstance(data, list), "a list", where)
        args = typing.get_args(hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            _expect(data, len(data) == len(args), f"{len(args)} values", where)
            return tuple(decode(a, v, get, f"{where}[{i}]")
                         for i, (a, v) in enumerate(zip(args, data, strict=True)))
        items = [decode(args[0] if args else Any, v, get, f"{where}[{i}]")
                 for i, v in enumerate(data)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _expect(data, isinstance(data, dict), "a mapping", where)
        value_type = (typing.get_args(hint) or (str, Any))[1]
        if value_type is Tensor:
            if not data:
                return {}
            reference = data.get(TENSORS)
            _expect(data, isinstance(reference, str) and len(data) == 1, "stored tensors",
                    where)
            return get(reference)
        return {k: decode(value_type, v, get, f"{where}[{k!r}]") for k, v in data.items()}
    raise CodecError(f"{where}: a {hint!r} cannot be read back")


def decode_as(cls: type[T], data: Any, get: Get) -> T:
    """A `cls` rebuilt from `data` (what `encode` made of one)."""
    value: T = decode(cls, data, get, cls.__name__)
    return value


def _expect(data: Any, ok: bool, what: str, where: str) -> Any:
    if not ok:
        raise CodecError(f"{where}: expected {what}, found {data!r:.60}")
    return data


def _decode_union(hint: Any, data: Any, get: Get, where: str) -> Any:
    arms = typing.get_args(hint)
    if data is None and type(None) in arms:
        return None
    problems = []
    for arm in (a for a in arms if a is not type(None)):
        try:
            return decode(arm, data, get, where)
        except CodecError as exc:
            problems.append(str(exc))
    raise CodecError(problems[0] if len(problems) == 1 else
                     f"{where}: {data!r:.60} fits none of {hint}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls)
    return found


def _decode_dataclass(cls: type, data: Any, get: Get, where: str) -> Any:
    _expect(data, isinstance(data, dict), f"a {cls.__name__}", where)
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            if (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                raise CodecError(f"{where}: {f.name} is missing")
            continue  # saved before the field existed: its default
        values[f.name] = decode(hints[f.name], data[f.name], get, f"{where}.{f.name}")
    try:
        return cls(**values)
    except (PrunevizError, ValueError, TypeError) as exc:
        raise CodecError(f"{where}: {exc}") from None


__all__ = ["TENSORS", "CodecError", "Get", "Put", "decode", "decode_as", "encode"]
