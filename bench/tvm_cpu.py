"""edgecc's TVM CPU artifacts on this machine's x86 CPU (the same machinery as -t arm64, with
an ``llvm`` host target): fp32 and int8 (w8a8) latency against PyTorch eager and onnxruntime
(fp32, and onnxruntime's own int8 QDQ model from quantize_static), 2 threads each, median of
interleaved rounds, plus edgecc's compile seconds. Prints onnxruntime's version and thread
settings, a table, and writes ``bench/results/tvm_cpu.json``.

    python bench/tvm_cpu.py [--repeats 20] [--models resnet20,mobilenet_v2,...] [--tune 200]

Models (issue 18; random weights, nothing downloaded): ResNet-20 and a MobileNetV2-style CNN
(1x3x32x32, and mobilenet_v2_224 at 1x3x224x224), BERT and GPT-2 with 4 layers of hidden 256
(1x128 tokens), and an all-MiniLM-L6-v2-shaped BERT (6 layers, hidden 384, 12 heads, 16x64
tokens).

edgecc columns: ``fp32``; ``int8`` = w8a8 with integer kernels (``integer_kernels=true``:
int8 GEMMs and convs, fixed-point requantize — what -t arm64 runs); with ``--sim`` also
``int8 sim`` = float simulation with int8 weight storage (the host default). Each untuned
(edgecc's default schedule) and, with ``--tune [N]``, MetaSchedule-tuned with a budget of N
trials per model and build (bare ``--tune``: 64; a fresh record cache per model, so the budget
is all the tuning it got; each kernel's default schedule is a measured candidate and is kept
where no tuned candidate beat it, so tuned is never the tuner's worse pick: the JSON's
``tuning`` says how many kernels kept it; then the whole model is timed end to end, untuned
build against tuned kernels and edgecc's kernel settings, per model and per call site of the
x86 kernels (``targets/tvm/end_to_end.py``), and the untuned build is kept unless a candidate
is faster beyond the measured noise in a screening and a confirming pass (its ``verdict``:
the median per-round ratio plus two standard errors under 0.97); ``tuning.outcome`` says
which won, ``budget`` what was measured and the JSON's ``end_to_end`` the rule's numbers; where
the untuned build was kept, the tuned artifact is that library and is not timed again: its
column is the untuned column's samples, named in the JSON's ``tuned_timed_as``). Ratio columns
with ``--tune``: ``tuned/ort`` (fp32 tuned vs
onnxruntime fp32, issue 18's goal <= 0.8x), ``tuned/fp32`` (vs the untuned build), and the
same for int8 (``int8t/ortq``, ``int8t/int8``). ``w4a16`` = GPTQ int4 weights in groups of 32
(the main job's w4a16 build; transformers only). ``compile s`` = the manifest's
``compile_seconds`` total of each untuned build (checks, load, passes, lowering with the TVM
relax passes / codegen / link, verification, writing; the stages are in the JSON's
``compile_stages``). Every variant is built first, then all are timed in interleaved rounds (per
round, in an order rotated by one each round: a pause, a few untimed calls, then
``repeats // 10`` timed ones (1-10), of each; at least 10 rounds: ``interleaved_times``), so
a slow spell of a shared machine does not favour one column; compare columns within a row.
Before each block (after its pause) ``bench/host_probe.py`` measures how much of a second core
the host gives this guest (``--no-probe``: not); the JSON's ``host_probe`` and
``two_core_ratios`` (the paired ratios over the rounds where every probe read two full cores)
record the machine's state beside the goals' all-rounds ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import host_probe  # noqa: E402
from bench.host import THREADS, Hidden, bert_base_like, gpt2_small_like  # noqa: E402
from examples.models import mobilenet_v2, resnet20  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")


def minilm_like():
    """all-MiniLM-L6-v2's shape (BERT, 6 layers, hidden 384, 12 heads, FFN 1536), random
    weights, no pooler: the token embeddings a sentence encoder pools."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                        num_attention_heads=12, intermediate_size=1536,
                        max_position_embeddings=512, attn_implementation="sdpa")
    return tf.BertModel(cfg, add_pooling_layer=False)


def models():
    """name -> (make, example inputs, input description)."""
    tokens = (torch.randint(0, 30000, (1, 128)), torch.ones(1, 128, dtype=torch.long))
    mini = (torch.randint(0, 30000, (16, 64)), torch.ones(16, 64, dtype=torch.long))
    return {
        "resnet20": (lambda: resnet20(), (torch.randn(1, 3, 32, 32),), "1x3x32x32"),
        "mobilenet_v2": (lambda: mobilenet_v2(), (torch.randn(1, 3, 32, 32),), "1x3x32x32"),
        "mobilenet_v2_224": (lambda: mobilenet_v2(), (torch.randn(1, 3, 224, 224),),
                             "1x3x224x224"),
        "bert": (lambda: Hidden(bert_base_like(), False), tokens, "4x256 1x128"),
        "gpt2": (lambda: Hidden(gpt2_small_like(), True), tokens, "4x256 1x128"),
        "minilm": (lambda: Hidden(minilm_like(), False), mini, "6x384 16x64"),
    }


ALL_MODELS = "resnet20,mobilenet_v2,mobilenet_v2_224,bert,gpt2,minilm"
W4A16_MODELS = ("bert", "gpt2", "minilm")  # weight-only int4: the transformers' linears
W4A16 = "fold-batchnorm,quantize{scheme=w4a16,group_size=32,algorithm=gptq},fuse,dce"
SMALL_TUNE = 64  # trials per compile for a bare --tune


def calibration(inputs, n=4):
    torch.manual_seed(1)
    out = []
    for _ in range(n):
        batch = []
        for t in inputs:
            batch.append(torch.randint(0, 30000, t.shape) if t.dtype == torch.long and
                         t.max() > 1 else (t.clone() if t.dtype == torch.long else
                                           torch.randn_like(t)))
        out.append(tuple(batch))
    return out


def ort_fp32_fn(module, inputs):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
        sess = ort.InferenceSession(path, _ort_options(), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feed)


def _ort_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    return opts


def ort_int8_fn(module, inputs, calib):
    """onnxruntime's own static int8 QDQ model (quantize_static, per-channel weights)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader, QuantFormat, QuantType, quantize_static,
    )

    with tempfile.TemporaryDirectory() as d:
        fp32, int8 = os.path.join(d, "m.onnx"), os.path.join(d, "q.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(fp32)
        names = [i.name for i in ort.InferenceSession(fp32).get_inputs()]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{n: t.numpy() for n, t in zip(names, b)} for b in calib])

            def get_next(self):
                return next(self.it, None)

        quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        sess = ort.InferenceSession(int8, _ort_options(), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(names, inputs)}
    return lambda: sess.run(None, feed)


def edgecc_fn(module, inputs, pipeline, calib, **target_options):
    """A compiled edgecc host artifact (loaded once), what its tuning did (if tuned) and the
    compile's wall seconds."""
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        if target_options.get("tune_trials"):
            target_options["tune_cache"] = os.path.join(d, "tuning")
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS,
                                                             **target_options})
        wall = time.perf_counter() - start
        res.run(*inputs)  # loads the library (a private copy) before the directory goes
    lowering = res.report.get("lowering", {})
    stages = res.report["compile_seconds"]  # the manifest's per-stage seconds
    _edgecc_fn_info.update({"tuning": lowering.get("tuning"), "seconds": stages["total"],
                            "wall_seconds": wall, "stages": stages,
                            "integer_kernels": lowering.get("integer_kernels")})
    return (lambda: res.run(*inputs)), lowering.get("tuning")


def _kept_default(stats: dict | None) -> bool:
    """Whether tuning kept the untuned build (``end_to_end.chosen == "default"``): the tuned
    artifact is then the untuned library, and timing it again would only add a second noise
    sample of the same code (s29: 0.75x and 0.86x of onnxruntime in one run), so its column
    takes the untuned column's samples."""
    return bool(stats) and (stats.get("end_to_end") or {}).get("chosen") == "default"


def _tuning_seconds(stats: dict) -> float:
    """Seconds tuning took: the kernel search and the end-to-end measurement."""
    return round(stats.get("seconds", 0) + (stats.get("end_to_end") or {}).get("seconds", 0)
                 * (not (stats.get("end_to_end") or {}).get("from_cache")), 1)


_edgecc_fn_info: dict = {}  # what the last edgecc_fn call measured besides the callable


# Between blocks: the previous runtime's threads stop spinning. Measured (process CPU time
# during a sleep after 5 calls, ResNet-20, 2 threads): onnxruntime's intra-op threads spin
# ~35 ms after a run (its default allow_spinning, kept: it is how onnxruntime runs), PyTorch's
# ~9 ms, edgecc's pool <= 3 ms.
PAUSE_S = 0.3
# Untimed calls before each block go on for at least this long (and at least ``warmup``
# calls): after the pause, an idle virtual CPU comes back with cold caches and a slow clock,
# and three calls of a 0.5 ms model did not bring it back (``--warmup-s``).
WARMUP_S = 0.05
# At least this many rounds (blocks per callable) when the repeats allow it: the block
# shrinks to fit (``interleaved_times``).
MIN_ROUNDS = 10


def round_block(repeats: int) -> int:
    """Timed calls per block that leave at least ``MIN_ROUNDS`` rounds (1..10)."""
    return max(1, min(10, repeats // MIN_ROUNDS))


def interleaved_times(fns, repeats, block=None, warmup=3, clock="wall", probe=None,
                      probes=None):
    """Every timed call of each callable (ms), in rounds — per round, each one gets
    ``warmup`` untimed calls (by the wall clock: for at least ``WARMUP_S``) then ``block``
    timed ones — so a slow spell of a shared machine affects every column alike. (Not one
    call each per round: the runtimes' thread pools spin after a call, and whichever ran next
    paid for the previous one's spinning; by the wall clock a pause before each block lets
    them stop.) ``clock="cpu"``: the calling thread's CPU time (one-thread runs on a loaded
    machine), no pause.

    Rounds, not long blocks: this 2-core KVM guest switches between discrete speed states
    for seconds at a time (the other vCPU taken or not, by this machine's other processes or
    the host): the same callable's block medians read 0.35 or 0.55 ms (ResNet-20 fp32, under
    load), onnxruntime's 0.41 or 0.80. With the old 2 blocks of 10 per callable (``--repeats
    20``) each column's median was whichever state its two blocks met: two loads of one
    library (byte-identical builds: one dlopen handle, pool and worker; only the VM object
    differs), or one callable timed as two columns, read 0.49-1.54x of each other in one run
    (bench/identical_builds.py, under load ~3): what --tune's "tuned" columns showed
    (0.69-1.32x of the untuned build they were). So ``block`` defaults to ``repeats // MIN_ROUNDS`` calls
    (1..10): at least ``MIN_ROUNDS`` rounds, each column sampling the states as often; and
    the order rotates by one every round (round r starts at callable r mod n), so no column
    always follows the same one or sits at the same place in the round.

    ``probe`` (``bench/host_probe.py``'s ``HostProbe.scaling``): called before each block's
    warm-up calls, its value appended to ``probes[callable]`` (one a round): the host's state
    next to each block's timings."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    if block is None:
        block = round_block(repeats)
    names = list(fns)
    times = {k: [] for k in fns}
    for r in range(max(1, repeats // block)):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            if clock == "wall":
                time.sleep(PAUSE_S)
            if probe is not None:
                probes.setdefault(k, []).append(probe())
            start = time.perf_counter()
            done = 0
            while done < warmup or (clock == "wall" and time.perf_counter() - start < WARMUP_S):
                fn()
                done += 1
            for _ in range(block):
                t = now()
                fn()
                times[k].append((now() - t) * 1000)
    return times


def interleaved_ms(fns, repeats, block=None, warmup=3):
    """Median latency (ms) of each callable, timed by ``interleaved_times``."""
    return {k: statistics.median(v)
            for k, v in interleaved_times(fns, repeats, block, warmup).items()}


def paired_ratios(times: dict, a: str, b: str, repeats: int) -> list[float]:
    """Per round, a's round mean / b's round mean: ``interleaved_times``' rounds paired, as
    the tuner's end-to-end rule compares builds. A round's columns run within about a second
    of each other, so each ratio is taken in one of the machine's speed states, where a ratio
    of two whole-run medians can pair samples from different states (identical builds:
    paired 0.90-1.14, medians 0.87-1.30, bench/identical_builds.py)."""
    block = round_block(repeats)
    xa, xb = times[a], times[b]
    rounds = min(len(xa), len(xb)) // block
    return [statistics.fmean(xa[r * block:(r + 1) * block])
            / statistics.fmean(xb[r * block:(r + 1) * block]) for r in range(rounds)]


def paired_ratio(times: dict, a: str, b: str, repeats: int) -> float:
    """The median over rounds of ``paired_ratios``: the goals' statistic."""
    return statistics.median(paired_ratios(times, a, b, repeats))


def quartiles(values: list[float]) -> list[float]:
    """[25th, 75th] percentile of ``values`` (the spread of a paired ratio's rounds)."""
    if len(values) < 2:
        return [values[0], values[0]] if values else []
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def median_p10(times: dict) -> dict:
    """``interleaved_times``' samples -> per callable, the median and 10th percentile."""
    return {k: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10]}
            for k, v in times.items()}


def ort_settings() -> dict:
    import onnxruntime as ort

    opts = _ort_options()
    return {"version": ort.__version__, "providers": ["CPUExecutionProvider"],
            "intra_op_num_threads": opts.intra_op_num_threads,
            "inter_op_num_threads": opts.inter_op_num_threads,
            "graph_optimization_level": str(opts.graph_optimization_level),
            "execution_mode": str(opts.execution_mode),
            "int8": "quantize_static QDQ, per-channel int8 weights, int8 activations"}


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the machine's architecture elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        return names[0] if names else platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def _write(args, rows):
    result = {"benchmark": "TVM CPU (x86 llvm) fp32 / int8 vs PyTorch and onnxruntime",
              "threads": THREADS, "repeats": args.repeats,
              "warmup_s": WARMUP_S, "pause_s": PAUSE_S, "min_rounds": MIN_ROUNDS,
              "statistic": "median of interleaved rounds",
              "tune_trials": args.tune, "machine": {"cpu": _cpu_name(),
                                                    "cores": os.cpu_count()},
              "versions": {"edgecc": edgecc.__version__, "torch": torch.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__,
                           "tvm": __import__("tvm").__version__, "numpy": np.__version__},
              "onnxruntime": ort_settings(), "rows": rows}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


def main() -> int:
    global WARMUP_S, MIN_ROUNDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default=ALL_MODELS)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                        help="at least this many interleaved rounds (default "
                             f"{MIN_ROUNDS}; each round times repeats // rounds calls "
                             "of every column, 1..10)")
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S,
                        help="untimed calls before each block for at least this long "
                             f"(default {WARMUP_S}; 0: only the three warm-up calls)")
    parser.add_argument("--sim", action="store_true",
                        help="also measure the float simulation of w8a8 (int8 weight storage)")
    parser.add_argument("--tune", type=int, default=0, nargs="?", const=SMALL_TUNE,
                        metavar="TRIALS",
                        help="also measure MetaSchedule-tuned builds with this trial budget "
                             f"per compile (bare --tune: {SMALL_TUNE})")
    parser.add_argument("--no-probe", action="store_true",
                        help="no host probe before each block (bench/host_probe.py)")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "tvm_cpu.json"))
    args = parser.parse_args()
    probe = None if args.no_probe else host_probe.probe()
    if probe is not None:
        print(f"host probe: the second thread's gain on a register-only FMA loop before each "
              f"block (two full cores >= {host_probe.TWO_CORES}); now "
              f"{probe.scaling():.2f}x", flush=True)
    WARMUP_S = args.warmup_s
    MIN_ROUNDS = max(1, args.rounds)
    torch.set_num_threads(THREADS)
    ort = ort_settings()
    print(f"onnxruntime {ort['version']}: {ort['providers'][0]}, intra_op_num_threads="
          f"{ort['intra_op_num_threads']}, inter_op_num_threads={ort['inter_op_num_threads']}, "
          f"{ort['graph_optimization_level']}; torch threads {torch.get_num_threads()}, "
          f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}; EDGECC_KERNEL_COUNTERS="
          f"{os.environ.get('EDGECC_KERNEL_COUNTERS')} (int8 path counters off unless 1)",
          flush=True)
    table = models()
    rows = []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        q = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
        fp32 = "fold-batchnorm,fuse,dce"
        tuning, compile_s, stages, integer = {}, {}, {}, None
        with torch.no_grad():
            fns = {"pytorch_eager_ms": lambda m=module, i=inputs: m(*i),
                   "onnxruntime_fp32_ms": ort_fp32_fn(module, inputs),
                   "onnxruntime_int8_ms": ort_int8_fn(module, inputs, calib)}
            fns["edgecc_fp32_ms"] = edgecc_fn(module, inputs, fp32, None)[0]
            compile_s["fp32"] = _edgecc_fn_info["seconds"]
            stages["fp32"] = _edgecc_fn_info["stages"]
            if args.sim:
                fns["edgecc_int8_sim_ms"] = edgecc_fn(module, inputs, q, calib)[0]
                compile_s["int8_sim"] = _edgecc_fn_info["seconds"]
            fns["edgecc_int8_ms"] = edgecc_fn(module, inputs, q, calib, integer_kernels=True)[0]
            compile_s["int8"] = _edgecc_fn_info["seconds"]
            stages["int8"] = _edgecc_fn_info["stages"]
            integer = _edgecc_fn_info["integer_kernels"]
            if name in W4A16_MODELS:
                fns["edgecc_w4a16_ms"] = edgecc_fn(module, inputs, W4A16, calib)[0]
                compile_s["w4a16"] = _edgecc_fn_info["seconds"]
                stages["w4a16"] = _edgecc_fn_info["stages"]
            same_as = {}  # a tuned column whose build is the untuned one -> that column
            if args.tune:
                for build, pipe, opts in (("fp32", fp32, {}),
                                          ("int8", q, {"integer_kernels": True})):
                    fn, tuning[build] = edgecc_fn(module, inputs, pipe,
                                                  calib if build == "int8" else None,
                                                  tune_trials=args.tune, **opts)
                    if _kept_default(tuning[build]):
                        same_as[f"edgecc_{build}_tuned_ms"] = f"edgecc_{build}_ms"
                    else:
                        fns[f"edgecc_{build}_tuned_ms"] = fn
            probes = {}
            samples = interleaved_times(fns, args.repeats,
                                        probe=probe.scaling if probe else None, probes=probes)
            for col, untuned in same_as.items():  # the same library: its samples
                samples[col] = samples[untuned]
                if untuned in probes:
                    probes[col] = probes[untuned]
            row = {"model": name, "input": shape,
                   **{k: statistics.median(v) for k, v in samples.items()}}
        if same_as:
            row["tuned_timed_as"] = same_as
        row["compile_s"] = compile_s  # the manifests' compile_seconds totals
        row["compile_stages"] = stages  # and their stages
        pairs = {"edgecc_fp32_vs_ort_fp32": ("edgecc_fp32_ms", "onnxruntime_fp32_ms"),
                 "edgecc_int8_vs_edgecc_fp32": ("edgecc_int8_ms", "edgecc_fp32_ms"),
                 "edgecc_int8_vs_ort_int8": ("edgecc_int8_ms", "onnxruntime_int8_ms")}
        if "edgecc_w4a16_ms" in row:
            pairs["edgecc_w4a16_vs_edgecc_fp32"] = ("edgecc_w4a16_ms", "edgecc_fp32_ms")
        if integer:
            row["integer_kernels"] = {k: v for k, v in integer.items() if k != "float_fallbacks"}
            row["integer_kernels"]["float_fallbacks"] = len(integer.get("float_fallbacks", []))
        if args.tune:
            pairs.update({
                "edgecc_fp32_tuned_vs_ort_fp32": ("edgecc_fp32_tuned_ms", "onnxruntime_fp32_ms"),
                "edgecc_fp32_tuned_vs_edgecc_fp32": ("edgecc_fp32_tuned_ms", "edgecc_fp32_ms"),
                "edgecc_int8_tuned_vs_ort_int8": ("edgecc_int8_tuned_ms", "onnxruntime_int8_ms"),
                "edgecc_int8_tuned_vs_edgecc_int8": ("edgecc_int8_tuned_ms", "edgecc_int8_ms")})
        # the goals' ratios: per-round paired (``paired_ratio``); the ratios of the whole-run
        # medians beside them
        row["ratios"] = {k: paired_ratio(samples, a, b, args.repeats)
                         for k, (a, b) in pairs.items()}
        row["ratios_of_medians"] = {k: row[a] / row[b] for k, (a, b) in pairs.items()}
        row["ratio_quartiles"] = {k: quartiles(paired_ratios(samples, a, b, args.repeats))
                                  for k, (a, b) in pairs.items()}
        if probes:  # the host's state (a diagnostic beside the goals' all-rounds ratios)
            row["host_probe"] = host_probe.spread([v for vs in probes.values() for v in vs])
            row["two_core_ratios"] = {}
            for k, (a, b) in pairs.items():
                ratios = paired_ratios(samples, a, b, args.repeats)  # (one a probed round)
                kept = [ratios[r] for r in host_probe.two_core_rounds(probes, [a, b])]
                row["two_core_ratios"][k] = {"median": statistics.median(kept) if kept else None,
                                             "rounds": len(kept), "of": len(ratios)}
        if tuning:
            row["tuning"] = {k: {**{f: v.get(f) for f in (
                "trials_budget", "kernels", "trials_run", "default_kept", "budget", "outcome",
                "applied")}, "seconds": _tuning_seconds(v),
                "tuned_is_untuned": _kept_default(v),
                "end_to_end": {f: (v.get("end_to_end") or {}).get(f) for f in (
                    "chosen", "default_ms", "chosen_ms", "ms", "confirm_ms", "verdicts",
                    "confirm", "sites", "calls", "seconds", "rule")}}
                for k, v in tuning.items() if v}
        rows.append(row)
        print(f"done {name}: {row}", file=sys.stderr, flush=True)
        _write(args, rows)  # after each model: a long run keeps what it measured
    cols = ["pytorch_eager_ms", "onnxruntime_fp32_ms", "onnxruntime_int8_ms",
            "edgecc_fp32_ms", "edgecc_int8_ms"]
    heads = ["eager", "ort fp32", "ort int8", "edgecc fp32", "edgecc int8"]
    if args.sim:
        cols.insert(4, "edgecc_int8_sim_ms")
        heads.insert(4, "int8 sim")
    cols.append("edgecc_w4a16_ms")
    heads.append("w4a16")
    if args.tune:
        cols += ["edgecc_fp32_tuned_ms", "edgecc_int8_tuned_ms"]
        heads += ["fp32 tuned", "int8 tuned"]
    heads += ["fp32/ort", "int8/fp32", "int8/ortq", "w4a16/fp32"]
    ratio_keys = ["edgecc_fp32_vs_ort_fp32", "edgecc_int8_vs_edgecc_fp32",
                  "edgecc_int8_vs_ort_int8", "edgecc_w4a16_vs_edgecc_fp32"]
    if args.tune:  # goal: tuned fp32 <= 0.8x onnxruntime fp32; tuned <= untuned
        heads += ["tuned/ort", "tuned/fp32", "int8t/ortq", "int8t/int8"]
        ratio_keys += ["edgecc_fp32_tuned_vs_ort_fp32", "edgecc_fp32_tuned_vs_edgecc_fp32",
                       "edgecc_int8_tuned_vs_ort_int8", "edgecc_int8_tuned_vs_edgecc_int8"]
    heads += ["  compile s fp32/int8/w4a16"]
    print(f"{'model':<18}{'input':<13}" + "".join(f"{h:>12}" for h in heads))
    for r in rows:
        ratio = r["ratios"]
        print(f"{r['model']:<18}{r['input']:<13}"
              + "".join(f"{r[c]:>12.2f}" if c in r else f"{'-':>12}" for c in cols)
              + "".join(f"{ratio[k]:>11.2f}x" if k in ratio else f"{'-':>12}"
                        for k in ratio_keys)
              + f"{'':>8}" + "/".join(f"{r['compile_s'][k]:.1f}" if k in r["compile_s"]
                                      else "-" for k in ("fp32", "int8", "w4a16")))
    print("ms, median of interleaved rounds, 2 threads; ratios: median over rounds of the "
          "per-round ratio (paired; the JSON's ratios_of_medians has the ratios of the medians); "
          "edgecc untuned = default schedule; "
          "int8 = w8a8 integer kernels; w4a16 = GPTQ int4 weights, groups of 32 (transformers "
          "only); compile s = the manifests' compile_seconds totals (no tuning; stages in the "
          "JSON)" + (f"; tuned = --tune {args.tune}: MetaSchedule, budget {args.tune} trials "
                     "per model and build (default schedule kept where no candidate beat it), "
                     "then the whole model timed end to end against the untuned build with "
                     "edgecc's kernel settings (per model and per call site) as further "
                     "candidates (the untuned build kept unless one was faster beyond the "
                     "measured noise in two passes: targets/tvm/end_to_end.py's rule)" if args.tune else ""))
    print("spread of the paired ratios over rounds (25th-75th percentile):")
    for r in rows:
        print(f"  {r['model']:<16}" + ", ".join(
            f"{k.replace('edgecc_', '').replace('_vs_', '/')} {q[0]:.2f}-{q[1]:.2f}"
            for k, q in r["ratio_quartiles"].items() if q))
    if any("host_probe" in r for r in rows):
        print(f"host state (bench/host_probe.py: the second thread's gain on a register-only "
              f"loop before each block; < {host_probe.TWO_CORES}x: the two vCPUs shared one "
              "core or one was descheduled) and the paired ratios over only the rounds where "
              "every probe read two full cores (a diagnostic; the goals are the all-rounds "
              "ratios above):")
        for r in rows:
            if "host_probe" not in r:
                continue
            h = r["host_probe"]
            print(f"  {r['model']:<16}probes p10/median/p90 {h['p10']:.2f}/{h['median']:.2f}/"
                  f"{h['p90']:.2f}x, {h['share_below_two_cores']:.0%} below; two-core rounds: "
                  + ", ".join(f"{k.replace('edgecc_', '').replace('_vs_', '/')} "
                              f"{v['median']:.2f} ({v['rounds']}/{v['of']})"
                              for k, v in r["two_core_ratios"].items()
                              if v["median"] is not None))
    for r in rows:
        for build, t in r.get("tuning", {}).items():
            print(f"  tuning {r['model']} {build} ({t['seconds']:.0f} s): {t['outcome']}")
            print(f"    budget: {t['budget']}")
            if t["tuned_is_untuned"]:  # the same library as untuned
                print(f"    the {build} tuned build IS the untuned one (default kept): not "
                      "timed again, its column is the untuned column's samples")
    _write(args, rows)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
