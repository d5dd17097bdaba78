"""``edgecc report OUT/``: one self-contained HTML page (``OUT/report.html``) that shows what
a compile did, read from the manifest it wrote."""
