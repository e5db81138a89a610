"""CSV formula-injection guard (OWASP "CSV Injection"): text cells that a spreadsheet would run as a formula.

A text cell starting with `=`, `+`, `-`, `@`, tab or carriage return is written with a single quote in front
(`=HYPERLINK(…)` → `'=HYPERLINK(…)`), so Excel or LibreOffice shows it as text. A cell that already starts with
a quote gets one more, which keeps the mapping reversible: `restore` removes exactly the added quote, so a
resumed run reads the patient ids it wrote. Numbers are never altered (only `str` values are neutralised).
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def neutralise(value: Any) -> Any:
    """A text cell as written to CSV: `'` + value when it starts like a formula (or with `'`); other values as is."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, QUOTE)):
        return QUOTE + value
    return value


def restore(value: str) -> str:
    """The inverse of `neutralise` for a cell read back from CSV."""
    if len(value) >= 2 and value[0] == QUOTE and value[1] in (*FORMULA_START, QUOTE):
        return value[1:]
    return value
