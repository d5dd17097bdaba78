"""Charts for ``report.html``, drawn with matplotlib and returned as inline SVG text.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot: no global figure manager,
no backend switch for the process); SVG metadata dates are dropped and ids salted with a
constant so the same manifest gives the same page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

PALETTE = ["#3b6ea8", "#e08a2c", "#5a9e4b", "#c44e52", "#8172b3", "#937860", "#da8bc3",
           "#8c8c8c"]


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "edgecc", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _figure(rows: int, width: float = 7.0):
    from matplotlib.figure import Figure

    height = max(1.6, min(0.28 * rows + 0.9, 14.0))
    return Figure(figsize=(width, height), dpi=96)


def hbar(labels: Sequence[str], values: Sequence[float], *, xlabel: str,
         highlight: Sequence[bool] | None = None, note: str = "") -> str:
    """One horizontal bar per label (the first label on top)."""
    fig = _figure(len(labels))
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    colors = [PALETTE[1] if (highlight and highlight[i]) else PALETTE[0]
              for i in range(len(labels))]
    ax.barh(ys, values, color=colors)
    ax.set_yticks(ys, [_short(label) for label in labels], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    for y, v in zip(ys, values):
        ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
    if note:
        ax.set_title(note, fontsize=8, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def profile(labels: Sequence[str], values: Sequence[float], *, ylabel: str,
            highlight: Sequence[bool] | None = None, note: str = "") -> str:
    """One bar per label in the given order (every layer of a model, in graph order): a
    fixed-height chart however many layers; tick labels thinned to about 40."""
    from matplotlib.figure import Figure

    n = len(labels)
    fig = Figure(figsize=(max(7.0, min(0.06 * n + 3.0, 14.0)), 3.4), dpi=96)
    ax = fig.add_subplot()
    xs = list(range(n))
    colors = [PALETTE[1] if (highlight and highlight[i]) else PALETTE[0] for i in xs]
    ax.bar(xs, values, width=0.85 if n < 200 else 1.0, color=colors)
    step = max(1, -(-n // 40))
    ax.set_xticks(xs[::step], [_short(labels[i], 28) for i in xs[::step]], fontsize=6,
                  rotation=90)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel(ylabel, fontsize=9)
    if note:
        ax.set_title(note, fontsize=8, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def stacked_hbar(labels: Sequence[str], series: dict[str, Sequence[float]], *,
                 xlabel: str) -> str:
    """Horizontal bars split by series (size by layer, one colour per dtype)."""
    fig = _figure(len(labels))
    ax = fig.add_subplot()
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for i, (name, values) in enumerate(series.items()):
        ax.barh(ys, values, left=left, color=PALETTE[i % len(PALETTE)], label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(ys, [_short(label) for label in labels], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], *,
                 ylabel: str) -> str:
    """Before/after bars per quantity (values normalized by the caller)."""
    fig = _figure(6, width=6.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, color=PALETTE[i % len(PALETTE)], label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups,
                  fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _short(label: str, limit: int = 38) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1):]
