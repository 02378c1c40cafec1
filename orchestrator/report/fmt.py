"""Number formats shared by the tables, warnings and plots."""

from __future__ import annotations


def fmt_ms(v: float | None) -> str:
    """One decimal, as the 2016 table; two significant digits below 1 ms so tiny CPU cells do not read 0.0."""
    if v is None:
        return ""
    return f"{v:.1f}" if v >= 0.95 else f"{v:.2g}"


def fmt_x(v: float | None) -> str:
    return f"{v:.2f}×" if v is not None else ""


def fmt_pct(v: float | None) -> str:
    return f"{v:.1f}%" if v is not None else ""
