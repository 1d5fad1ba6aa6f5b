"""JSON that every parser reads: no NaN or Infinity anywhere.

Python's json writes float('nan') as `NaN` and infinities as `Infinity`, which are not
JSON (RFC 8259): `jq`, JavaScript's JSON.parse and most other readers refuse the whole
document. `safe_json` writes each non-finite number as null and, inside an object, adds
a `<key>_reason` entry saying what it was, then serialises with allow_nan=False, so a
value that slipped through is an error here rather than a broken file there.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _why(value: float) -> str:
    if math.isnan(value):
        return "not a number (NaN): not measured, or the computation did not give a value"
    return f"{'+' if value > 0 else '-'}infinity: the value overflowed or divided by zero"


def sanitised(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (and, in a dict, a
    `<key>_reason` entry beside it); dicts, lists and tuples walked recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            out[key] = sanitised(item)
            if isinstance(item, float) and not math.isfinite(item):
                reason_key = f"{key}_reason"
                if reason_key not in value:
                    out[reason_key] = _why(item)
        return out
    if isinstance(value, list | tuple):
        return [sanitised(item) for item in value]
    return value


def safe_json(value: Any, *, indent: int | None = 2) -> str:
    """`value` as strict JSON text (see the module docstring)."""
    return json.dumps(sanitised(value), indent=indent, allow_nan=False)


__all__ = ["safe_json", "sanitised"]
