"""``edgecc report OUT/``: one self-contained HTML page (``OUT/report.html``) that shows what
a compile did, read from the manifest it wrote (``edgecc.report.html``), with charts drawn by
matplotlib as inline SVG (``edgecc.report.charts``)."""

from edgecc.report.html import REPORT, render, write_report

__all__ = ["REPORT", "render", "write_report"]
