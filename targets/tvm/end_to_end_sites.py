"""Per-call-site kernel variants for ``--tune`` (``end_to_end``): each call of an x86 kernel
may run its own value of a kernel-variant knob (``end_to_end.SITE_KNOBS``), set by the
call-site wrapper ``edgecc_site_<i>`` for that call and restored after it.

Why: a knob's best value differs from layer to layer (Winograd or the direct tiles, the
same-size 3x3 modes, 1x1 panel pairs, the depthwise row blocks, the int8 pool splits ...);
one value for the whole model loses on some layers what it gains on others, and the
defaults are already per-shape heuristics, so model-wide candidates rarely beat them.

The search (``site_knob_search``), on the build with the call-site wrappers: for each knob
that changes a kernel the model calls, in ``SITE_KNOB_ROUNDS`` interleaved rounds, the model
runs with the knob at its default (no override) and at each other value at *every* site its
kernel serves, while the wrappers time each call site (per site, the median of a block's
runs). A site takes the value whose per-call median is ``SITE_GAIN`` below the default's and
faster in all rounds but one; where several knobs' values qualify at one site, the largest
relative gain (one override per site: the gains of two knobs measured apart need not add
up). The table is then replicated (``_replicate``): the whole table against none, the same
rounds on the same library, each site's override kept only where its calls were faster
again, and the table dropped unless all sites' summed time was lower; when the sum failed but
some sites were faster again, those sites alone are replicated once more (the screening's
chance passes among the others may have sunk the sum). The table is then one more whole-model candidate of ``end_to_end.select`` and must pass
its rule against the default like any other, so a table whose per-site gains do not add up
end to end (one layer's variant slowing the next) is not applied.

Budget: ``SITE_KNOB_ROUNDS`` x (values + 1) blocks per knob, a block being the end-to-end
stage's block (~``ROUND_SECONDS`` of runs); knobs are searched in ``KNOBS`` order until
``SITE_KNOB_SECONDS`` have passed (the rest named in the summary as skipped for the budget).
On ResNet-20 fp32 (9 knobs, 14 values) that is 23 blocks a round.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from edgecc.targets.tvm import end_to_end
from edgecc.targets.tvm.end_to_end import ANY_KERNEL, SITE_GAIN, SITE_KNOBS, KernelSettings

SITE_KNOB_ROUNDS = 6  # even: the order of a knob's values alternates per round
SITE_KNOB_SECONDS = 60.0  # no further knob is searched once this much time has passed


def site_knob_options(library: Any, callees: list[str] | tuple[str, ...]
                      ) -> list[tuple[str, list[int], list[int]]]:
    """``(symbol, values, sites)`` per knob of ``SITE_KNOBS`` the search measures: the sites
    whose kernel it changes (``ANY_KERNEL``: every site), the values other than the
    library's default; a knob the library (a loaded ``end_to_end._Library`` with wrappers)
    lacks, or whose wrappers cannot set it, is left out."""
    out = []
    for knob in SITE_KNOBS:
        if knob.symbol not in library.knobs or knob.symbol not in library.knob_columns:
            continue
        sites = [i for i, c in enumerate(callees) if knob.kernels == ANY_KERNEL
                 or c in knob.kernels]
        default = library.knobs[knob.symbol][1]
        values = [v for v in knob.values if v != default]
        if sites and values:
            out.append((knob.symbol, values, sites))
    return out


def site_knob_search(library: Any, callees: list[str] | tuple[str, ...], inputs: list[Any],
                     block: int, rounds: int = SITE_KNOB_ROUNDS,
                     seconds: float = SITE_KNOB_SECONDS
                     ) -> tuple[KernelSettings | None, dict[str, Any]]:
    """The per-call-site kernel variants (module docstring) on ``library`` (the build with
    the call-site wrappers; ``callees``: the kernel of each site). Returns the settings
    (``site_knobs``; None when no site changed) and a summary for the manifest."""
    start = time.perf_counter()
    n = library.sites
    options = site_knob_options(library, callees)
    base: dict[str, list[list[float]]] = {}  # symbol: [round][site] us at the default
    per: dict[tuple[str, int], list[list[float]]] = {}  # (symbol, value): [round][site] us
    searched, skipped, blocks = [], [], 0
    for symbol, values, sites in options:
        if time.perf_counter() - start > seconds:
            skipped.append(symbol)
            continue
        searched.append(symbol)
        order: list[int | None] = [None, *values]
        base[symbol] = []
        for v in values:
            per[(symbol, v)] = []
        for r in range(rounds):
            for value in order if r % 2 == 0 else order[::-1]:
                library.set(KernelSettings() if value is None else KernelSettings(
                    site_knobs=tuple((i, symbol, value) for i in sites)))
                medians = end_to_end.site_medians(library, inputs, block)
                blocks += 1
                (base[symbol] if value is None else per[(symbol, value)]).append(medians)
    library.set(KernelSettings())
    best: dict[int, tuple[float, str, int, float, float]] = {}  # site: (gain, knob, value, ..)
    for symbol, values, sites in options:
        if symbol not in base:
            continue
        for i in sites:
            ref = [run[i] for run in base[symbol]]
            ref_us = statistics.median(ref)
            for v in values:
                got = [run[i] for run in per[(symbol, v)]]
                us = statistics.median(got)
                wins = sum(a < b for a, b in zip(got, ref))
                gain = 1 - us / ref_us if ref_us > 0 else 0.0
                if us < ref_us * (1 - SITE_GAIN) and wins >= rounds - 1 and \
                        gain > best.get(i, (0.0,))[0]:
                    best[i] = (gain, symbol, v, ref_us, us)
    table = tuple((i, symbol, v) for i, (_, symbol, v, _, _) in sorted(best.items()))
    screened = len(table)
    screened_choices = [f"site {i} {symbol}={v}: {ref:.1f} -> {us:.1f} us"
                        for i, (_, symbol, v, ref, us) in sorted(best.items())]
    check: dict[str, Any] = {}
    if table:
        table, check = _replicate(library, inputs, block, rounds, table)
        blocks += check["blocks"]
        if not table and check["replicated_sites"]:
            # the total failed, some sites replicated: the chance passes of the screening
            # among the others may have sunk it, so those sites alone once more
            table, again = _replicate(library, inputs, block, rounds,
                                      tuple(check["replicated_sites"]))
            blocks += again["blocks"]
            check = {"first": check, "second": again}
        best = {i: best[i] for i, _, _ in table}
    summary = {
        "sites": n, "knobs": len(searched), "values": sum(len(v) for s, v, _ in options
                                                          if s in searched),
        "rounds": rounds, "blocks": blocks, "calls_per_block": block,
        "changed": len(table), "screened": screened, "screened_choices": screened_choices,
        "replication": check,
        "seconds": round(time.perf_counter() - start, 2),
        "skipped_for_budget": skipped,
        "estimated_gain_us": round(sum(ref - us for _, _, _, ref, us in best.values()), 1),
        "table": [list(entry) for entry in table],
        "choices": [f"site {i} ({callees[i].removeprefix(end_to_end.KERNEL_PREFIX)}) "
                    f"{symbol}={v}: {ref:.1f} -> {us:.1f} us"
                    for i, (_, symbol, v, ref, us) in sorted(best.items())]}
    return (KernelSettings(site_knobs=table) if table else None), summary


def _replicate(library: Any, inputs: list[Any], block: int, rounds: int,
               table: tuple[tuple[int, str, int], ...]
               ) -> tuple[tuple[tuple[int, str, int], ...], dict[str, Any]]:
    """The screened table again, whole, against no override on the same library (``rounds``
    interleaved rounds): a site keeps its override only where its own calls were faster in
    all rounds but one (the screening tested every site x value: some pass by chance), and
    the table is dropped unless the sum of all sites' times — the neighbours of a changed
    site among them: a variant that leaves its output in the other core's cache slows the
    next layer, which its own timing does not see — was lower in all rounds but one."""
    per: dict[bool, list[list[float]]] = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            library.set(KernelSettings(site_knobs=table if on else ()))
            per[on].append(end_to_end.site_medians(library, inputs, block))
    library.set(KernelSettings())
    total_wins = sum(sum(b) < sum(a) for a, b in zip(per[False], per[True]))
    kept = tuple(entry for entry in table
                 if sum(b[entry[0]] < a[entry[0]] for a, b in zip(per[False], per[True]))
                 >= rounds - 1)
    total = [statistics.median(sum(run) for run in per[on]) for on in (False, True)]
    check = {"blocks": 2 * rounds, "total_us": [round(t, 1) for t in total],
             "total_wins": total_wins, "kept": len(kept) if total_wins >= rounds - 1 else 0,
             "replicated_sites": [list(e) for e in kept] if kept != table else []}
    return (kept if total_wins >= rounds - 1 else ()), check
