"""The next-token sampler of ``edgecc.llm.Sampler`` and of the arm64 bundle's board-side
``generate.py``: one source for both. It needs numpy only (no edgecc, no PyTorch): the arm64
bundler copies this file into the bundle beside ``generate.py`` (``targets/arm/runner.py``,
``install_generator``), which imports it from its own folder on the board.

Temperature 0 is greedy (argmax; ties take the lowest id, as PyTorch's); otherwise logits /
temperature, then top-k, then top-p (the smallest set of most likely tokens whose probability
reaches p), then one draw from ``rng`` (numpy's PCG64 seeded by the caller).
"""

import numpy as np


def options_problem(temperature, top_k, top_p):
    """What is wrong with the sampling options (one line), or None when they are valid."""
    if temperature < 0:
        return f"temperature={temperature}: must be >= 0 (0 = greedy)"
    if top_k < 0:
        return f"top_k={top_k}: must be >= 0 (0 = no limit)"
    if not 0.0 < top_p <= 1.0:
        return f"top_p={top_p}: must be in (0, 1]"
    return None


def pick(logits, rng, temperature=0.0, top_k=0, top_p=1.0):
    """The next token from one position's logits ``[vocab]``."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / temperature
    if top_k and top_k < x.size:
        kth = np.partition(x, -top_k)[-top_k]
        x = np.where(x < kth, -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))
