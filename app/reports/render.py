"""Matplotlib set-up and output: Agg backend, Figure objects (no pyplot global state), PNG/SVG bytes, data URIs.

matplotlib is imported on first use only, so importing the API or the client does not pay for it.
"""

from __future__ import annotations

import base64
import io
from typing import Any

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
DAYS_PER_YEAR = 365.0


class PlottingUnavailable(RuntimeError):
    """matplotlib is not installed (the client's optional `plots` extra)."""


def new_figure(width: float = 7.0, height: float = 4.5) -> Any:
    """A matplotlib Figure (Agg canvas) of width × height inches; print-readable default fonts."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise PlottingUnavailable(
            "plots need matplotlib: pip install matplotlib (or the `plots` extra: pip install 'steph-service[plots]')"
        ) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def style_axis(ax: Any, *, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=9)


def to_bytes(fig: Any, fmt: str) -> bytes:
    """The figure as PNG (100 dpi) or SVG bytes; ValueError for another format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; use one of {sorted(FORMATS)}")
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text (searchable, small)
        fig.savefig(buf, format=fmt, dpi=100, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def data_uri(fig: Any, fmt: str = "png") -> str:
    """data:image/…;base64,… of the figure (for self-contained HTML)."""
    return f"data:{FORMATS[fmt]};base64,{base64.b64encode(to_bytes(fig, fmt)).decode('ascii')}"


def years(days: float) -> float:
    return float(days) / DAYS_PER_YEAR
