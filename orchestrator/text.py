"""Text hygiene for every output (report.md, report.html, results.csv, the console): strings that came from a
workload, a log or a run directory are data, never markup, control sequences or formulas.

- `visible`: control characters (C0, DEL, C1: NUL, ANSI escapes), bidirectional and zero-width format characters
  (U+202E "right-to-left override" and friends: the Trojan-Source trick), line/paragraph separators and lone
  surrogates become their \\x.. / \\u.... escapes, so what is there is shown and nothing acts.
- `md_text`: visible, then inert in Markdown: HTML escaped (Markdown renders raw HTML), link and code syntax
  backslash-escaped, autolinks broken, pipes escaped (table cells).
- `csv_cell`: visible, then the OWASP rule against formula injection: a cell starting with = + - @ tab or CR is
  prefixed with a single quote.
"""

from __future__ import annotations

import html
import re
from typing import Any

_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\ud800-\udfff]"
)
_MD_SYNTAX = re.compile(r"([\\\[\]|])")
_AUTOLINK = re.compile(r"(?i)(://|www\.)")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: Any) -> Any:
    """Control, bidi and zero-width characters as visible escapes; anything not a string is returned as it is."""
    if not isinstance(text, str) or hasattr(text, "__html__"):
        return text  # markup the template itself made (a macro's output) holds only values already made visible
    return _INVISIBLE.sub(_escape, text)


def md_text(text: Any) -> str:
    """Safe anywhere in Markdown (table cells included): shown as written, never a link, markup or HTML."""
    flat = " ".join(visible(str(text)).split())
    inert = _MD_SYNTAX.sub(r"\\\1", html.escape(flat, quote=False))
    return _AUTOLINK.sub(lambda m: m.group().replace("/", "&#47;").replace(".", "&#46;"), inert)


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet evaluates (OWASP CSV injection rule); numbers and None pass unchanged."""
    if not isinstance(value, str):
        return value
    shown = visible(value)
    return "'" + shown if shown.startswith(_FORMULA_START) else shown
