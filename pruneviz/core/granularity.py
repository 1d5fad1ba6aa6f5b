"""Granularities: what one pruning decision removes (a weight, an N:M slot, a filter, a
channel)."""

from __future__ import annotations

from enum import StrEnum

from pruneviz.errors import PlanError
from pruneviz.i18n import N_, _


class Granularity(StrEnum):
    """What one pruning decision removes."""

    UNSTRUCTURED = "unstructured"  # single weights
    NM_2_4 = "2:4"  # 2 of every 4 consecutive input weights kept (semi-structured)
    NM_4_8 = "4:8"  # 4 of every 8 consecutive input weights kept
    FILTER = "filter"  # output channels of a conv, neurons (rows) of a linear/recurrent matrix
    CHANNEL = "channel"  # input channels of a conv, input features of a linear

    @property
    def structured(self) -> bool:
        """True for filter and channel pruning (whole structures removed)."""
        return self in (Granularity.FILTER, Granularity.CHANNEL)

    @property
    def n_m(self) -> tuple[int, int] | None:
        """(N, M) for semi-structured N:M sparsity, else None."""
        if self is Granularity.NM_2_4:
            return (2, 4)
        if self is Granularity.NM_4_8:
            return (4, 8)
        return None


# what the app shows for a granularity (N:M ones show as they are)
GRANULARITY_NAMES = {Granularity.UNSTRUCTURED: N_("unstructured"),
                     Granularity.FILTER: N_("filter"), Granularity.CHANNEL: N_("channel")}


def granularity_label(value: str) -> str:
    """A granularity's name as the app shows it, in the current language."""
    try:
        name = GRANULARITY_NAMES.get(Granularity(value))
    except ValueError:
        return value
    return value if name is None else _(name)


def parse_granularity(value: str | Granularity, where: str = "plan") -> Granularity:
    """Turn a string into a Granularity, naming the allowed values if it is not one."""
    if isinstance(value, Granularity):
        return value
    try:
        return Granularity(value)
    except ValueError:
        allowed = ", ".join(g.value for g in Granularity)
        raise PlanError(f"{where}: unknown granularity {value!r}; allowed: {allowed}") from None
