import os
import sys
import warnings

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # examples.models

warnings.filterwarnings("ignore", category=FutureWarning)
torch.manual_seed(0)


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
