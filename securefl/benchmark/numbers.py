"""How result tables write numbers: three significant digits in a readable unit.

Benchmarks on a shared machine vary by a few percent between runs, so more digits would only
be noise; fewer would hide the differences the tables are there to show."""

from __future__ import annotations

import math

MISSING = "—"


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, never in exponent form: 0.595, 9.11, 164, 1,880."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    decimals = digits - 1 - math.floor(math.log10(abs(rounded)))  # 9.996 rounds to 10.0, not 10.00
    return f"{round(rounded, decimals):,.{max(0, decimals)}f}"


def duration(seconds: float) -> str:
    """Seconds in s, ms or µs, whichever keeps the number at or above 1."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if abs(seconds) >= scale:
            return f"{significant(seconds / scale)} {unit}"
    return f"{significant(seconds / 1e-6)} µs"


def byte_size(n_bytes: float) -> str:
    """Bytes in decimal units (1 MB = 10^6 bytes), as network and disk sizes are quoted."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{significant(n_bytes / scale)} {unit}"
    return f"{n_bytes:,.0f} B"


def ratio(value: float | None) -> str:
    """A ratio as `8.04×`; a dash when it was not measured."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{significant(value)}×"


def times(value: float | None, base: float | None) -> str:
    """The ratio `value / base` as `8.04×`; a dash when either side was not measured."""
    return MISSING if value is None or not base else ratio(value / base)


def scientific(value: float, digits: int = 2) -> str:
    """Small errors and tolerances: 1.1e-7."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def count(n: float) -> str:
    """A count with thousands separators: 1,000,000."""
    return f"{n:,.0f}"


def compact_count(n: float) -> str:
    """A parameter or element count in short form: 10k, 62k, 1M, 11.7M."""
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def plural(n: int, noun: str) -> str:
    """`1 client`, `5 clients`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
