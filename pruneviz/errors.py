"""The exceptions pruneviz raises for problems a user can fix.

Every message says what is wrong and what to do; the CLI and the app show the message
alone (no traceback). Each class also subclasses the built-in exception a caller would
naturally catch (ValueError, FileNotFoundError, ...).
"""

from __future__ import annotations


class PrunevizError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class PlanError(PrunevizError, ValueError):
    """A pruning plan is malformed, or does not fit the model it is applied to."""


class ModelError(PrunevizError, ValueError):
    """A model cannot be used as given (non-finite weights, unsupported layer, ...)."""


class DataError(PrunevizError, ValueError):
    """Evaluation or calibration data is missing, empty or of the wrong shape."""


class DeviceError(PrunevizError, RuntimeError):
    """The device asked for (--device) is not a device name, or not available here."""


class SampleNotFoundError(PrunevizError, LookupError):
    """A sample model name is unknown, or its shipped files are missing."""


class Cancelled(Exception):
    """A long measurement was stopped before it finished (not an error: a newer request
    replaced it). Nothing it would have measured is kept."""


QUOTE_LIMIT = 1000  # characters of a message shown; the rest is counted, not quoted


def shortened(message: str, limit: int = QUOTE_LIMIT) -> str:
    """`message`, cut to `limit` characters with a count of what was left out: an error
    quoting a hostile input (600,000 layer names) stays one readable line."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}… ({len(message) - limit:,} more characters)"
