import os
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # examples.models

warnings.filterwarnings("ignore", category=FutureWarning)
# the x86 int8 kernels' path counters (the tests' proof that a path ran) count only when the
# environment asks, read as each library loads (x86_int8_source: off for users)
os.environ.setdefault("EDGECC_KERNEL_COUNTERS", "1")
torch.manual_seed(0)

# Hypothesis profiles. "ci" (selected when CI=true) draws the same examples on every run:
# a property test can only fail because of a change, never because of the draw; the
# failing example's reproduction blob is printed. "dev" (local runs) explores: random
# draws, failures replayed from the example database. HYPOTHESIS_PROFILE overrides.
# Tests set their own max_examples relative to the profile
# (``settings.default.max_examples``), never a fixed count, so CI stays short.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
_BASE = settings.get_profile("default")  # not the CI profile Hypothesis auto-loads
settings.register_profile("ci", parent=_BASE, derandomize=True, database=None,
                          max_examples=8, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("dev", parent=_BASE, max_examples=20, deadline=None,
                          print_blob=True, suppress_health_check=_QUIET)
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _CI else "dev"))

# Under pytest-xdist each worker gets its share of the cores: two workers each running
# torch's and TVM's default of one thread per core oversubscribe a 2-core machine, and
# OpenMP threads spinning for a core slow every GEMM several-fold.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    os.environ.setdefault("TVM_NUM_THREADS", str(_THREADS))


def pytest_collection_modifyitems(config, items):
    """Files with slow (real-model) tests first, so that with two workers the long ones
    start early and the short files fill in around them instead of trailing at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 (real weights): (program, calibration batches, held-out batches,
    held-out reference embeddings), shared by every test that uses it."""
    import edgecc
    from edgecc.pass_manager import PassManager
    from examples.minilm import load_minilm, tokenize
    from examples.text_corpus import calibration_sentences, heldout_sentences

    model, tok = load_minilm()
    calib = tokenize(tok, calibration_sentences(128), batch_size=16)
    held = tokenize(tok, heldout_sentences(64), batch_size=16)
    prog = PassManager("dce")(edgecc.trace(model, calib[0])).program
    refs = [prog.run(*b)[0] for b in held]
    return prog, calib, held, refs


@pytest.fixture(scope="session")
def digits():
    """A CNN trained here on scikit-learn's digits: (program, data, input batches, label
    batches, test accuracy %)."""
    import edgecc
    from examples.digits import accuracy, train_digits_cnn

    model, data = train_digits_cnn()
    xs, ys = data.batches()
    prog = edgecc.trace(model, xs[0])
    acc = accuracy(prog.run, data.x_test, data.y_test)
    assert acc > 95  # the model really learned the task
    return prog, data, xs, ys, acc
