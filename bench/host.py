"""Host-target latency: edgecc (TVM Relax with edgecc's default CPU schedule, untuned) vs
TVM's own unscheduled pipeline vs PyTorch eager vs onnxruntime (fp32), 2 threads each,
median of repeated runs. Prints a table and writes ``bench/results/host.json``.

    python bench/host.py [--repeats 50] [--models resnet20,mobilenet_v2,bert,gpt2]

Not a timed test: numbers depend on the machine. Tuning is a separate issue; this measures
the default path honestly.
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

THREADS = 2
os.environ["TVM_NUM_THREADS"] = str(THREADS)  # before TVM's thread pool starts
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import edgecc  # noqa: E402
from examples.models import mobilenet_v2, resnet20  # noqa: E402

warnings.filterwarnings("ignore")


def bert_base_like():
    """A BERT encoder (4 layers, hidden 256, 4 heads), batch 1 x 128 tokens."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=1024,
                        max_position_embeddings=512, attn_implementation="sdpa")
    return tf.BertModel(cfg)


def gpt2_small_like():
    """A GPT-2 decoder (4 layers, hidden 256, 4 heads), batch 1 x 128 tokens."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=50257, n_embd=256, n_layer=4, n_head=4, n_positions=512,
                        attn_implementation="sdpa")
    return tf.GPT2Model(cfg)


class Hidden(torch.nn.Module):
    def __init__(self, model, use_cache):
        super().__init__()
        self.model = model
        self.use_cache = use_cache

    def forward(self, input_ids, attention_mask):
        kw = {"use_cache": False} if self.use_cache else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state


def models():
    tokens = (torch.randint(0, 30000, (1, 128)), torch.ones(1, 128, dtype=torch.long))
    return {
        "resnet20": (lambda: resnet20(), (torch.randn(1, 3, 32, 32),), "1x3x32x32"),
        "mobilenet_v2": (lambda: mobilenet_v2(), (torch.randn(1, 3, 32, 32),), "1x3x32x32"),
        "bert": (lambda: Hidden(bert_base_like(), False), tokens, "1x128 tokens"),
        "gpt2": (lambda: Hidden(gpt2_small_like(), True), tokens, "1x128 tokens"),
    }


def median_ms(fn, repeats, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def onnxruntime_ms(module, inputs, repeats):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
        ref = module(*inputs).detach().numpy()
        err = float(np.abs(sess.run(None, feed)[0] - ref).max())
        return median_ms(lambda: sess.run(None, feed), repeats), err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--models", default="resnet20,mobilenet_v2,bert,gpt2")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "host.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rows = []
    table = models()
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        with torch.no_grad():
            eager = median_ms(lambda: module(*inputs), args.repeats)
            t = time.perf_counter()
            res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                                 target_options={"num_threads": THREADS})
            compile_s = time.perf_counter() - t
            res.run(*inputs)
            edge = median_ms(lambda: res.run(*inputs), args.repeats)
            plain = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                                   verify=False,
                                   target_options={"num_threads": THREADS, "schedule": "tvm"})
            plain.run(*inputs)
            tvm_default = median_ms(lambda: plain.run(*inputs), args.repeats)
            ort_ms, ort_err = onnxruntime_ms(module, inputs, args.repeats)
        v = res.report["verification"]
        rows.append({"model": name, "input": shape, "pytorch_eager_ms": eager,
                     "onnxruntime_ms": ort_ms, "edgecc_host_ms": edge,
                     "tvm_unscheduled_ms": tvm_default,
                     "edgecc_vs_onnxruntime": edge / ort_ms, "edgecc_vs_eager": edge / eager,
                     "edgecc_compile_s": compile_s, "edgecc_max_abs_err": v["max_abs"],
                     "onnxruntime_max_abs_err": ort_err})
        print(f"done {name}", file=sys.stderr)

    header = ("model", "input", "eager ms", "onnxrt ms", "tvm-plain ms", "edgecc ms",
              "edgecc/ort", "compile s", "max-abs err")
    lines = [f"{r['model']:<13}{r['input']:<14}{r['pytorch_eager_ms']:>13.2f}"
             f"{r['onnxruntime_ms']:>13.2f}{r['tvm_unscheduled_ms']:>13.2f}"
             f"{r['edgecc_host_ms']:>13.2f}"
             f"{r['edgecc_vs_onnxruntime']:>12.2f}x{r['edgecc_compile_s']:>13.1f}"
             f"{r['edgecc_max_abs_err']:>13.1e}" for r in rows]
    print(f"{header[0]:<13}{header[1]:<14}" + "".join(f"{h:>13}" for h in header[2:]))
    print("\n".join(lines))
    result = {
        "benchmark": "host target latency, fp32, edgecc default CPU schedule (untuned)",
        "threads": THREADS, "repeats": args.repeats, "statistic": "median",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"edgecc": edgecc.__version__, "torch": torch.__version__,
                     "onnxruntime": __import__("onnxruntime").__version__,
                     "tvm": __import__("tvm").__version__},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
