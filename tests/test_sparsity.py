"""edgecc.masked and the N:M / threshold masks."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given, settings

import edgecc
from edgecc.pass_manager import PassManager
from edgecc.sparsity import is_masked, masked, nm_mask, satisfies_nm, threshold_mask


@settings(max_examples=settings.default.max_examples * 2, deadline=None)
@given(nm=st.sampled_from([(1, 4), (2, 4), (4, 8)]), rows=st.integers(1, 5),
       groups=st.integers(1, 4), axis=st.sampled_from([0, 1]), seed=st.integers(0, 99))
def test_nm_mask_is_exact_and_keeps_the_largest(nm, rows, groups, axis, seed):
    n, m = nm
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(groups * m, rows, generator=g) if axis == 0 else torch.rand(
        rows, groups * m, generator=g)
    mask = nm_mask(scores, n, m, axis)
    assert satisfies_nm(mask, n, m, axis) and int(mask.sum()) == rows * groups * n
    blocks = scores.movedim(axis, -1).reshape(-1, m)
    kept = mask.movedim(axis, -1).reshape(-1, m)
    for b, k in zip(blocks, kept):  # every kept score beats every dropped one in its block
        assert b[k].min() >= b[~k].max() if (~k).any() else True


def test_threshold_mask_removes_exactly_the_fraction():
    scores = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    assert threshold_mask(scores, 0.5).tolist() == [[True, False], [False, True]]
    assert int(threshold_mask(torch.rand(100), 0.37).sum()) == 63


def test_masked_forward_and_straight_through_gradient():
    w = torch.randn(4, 4, requires_grad=True)
    mask = torch.rand(4, 4) > 0.5
    y = masked(w, mask, "unstructured")
    torch.testing.assert_close(y, w * mask)
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones(4, 4))  # dense gradient: RigL reads it


def test_masked_program_saves_and_loads(tmp_path):
    prog = edgecc.trace(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                            torch.nn.Linear(8, 2)).eval(), (torch.randn(3, 8),))
    pruned = PassManager("prune{pattern=2:4}")(prog).program
    path = str(tmp_path / "m.pt2")
    pruned.save(path)
    loaded = edgecc.load(path)
    assert sum(is_masked(n) for n in loaded.nodes("call_function")) == 2
    x = torch.randn(3, 8)
    torch.testing.assert_close(loaded.run(x)[0], pruned.run(x)[0])
