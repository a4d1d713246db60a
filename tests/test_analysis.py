"""Alignment and uniformity on hand-computed cases (MRC@k and PEER@k: tests/test_fairness.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.analysis import alignment, uniformity


def test_alignment_by_hand():
    parallel = np.array([[[1.0, 0.0], [0.0, 1.0]],  # item 1 in two languages: squared distance 2
                         [[1.0, 0.0], [1.0, 0.0]]])  # item 2: identical, 0
    assert alignment(parallel) == pytest.approx(1.0)
    three = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # pairs: 2, 4, 2
    assert alignment(three) == pytest.approx(8 / 3)


def test_uniformity_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # squared distances 2, 4, 2
    expected = math.log((2 * math.exp(-2 * 2) + math.exp(-2 * 4)) / 3)
    assert uniformity(x, t=2.0) == pytest.approx(expected)
    assert uniformity(x, t=2.0, chunk=1) == pytest.approx(expected)  # chunking changes nothing


def test_alignment_over_groups_equals_the_complete_array_and_handles_partial_groups():
    from eval.analysis import alignment_groups

    rng = np.random.default_rng(0)
    parallel = rng.normal(size=(5, 3, 4))  # 5 documents x 3 languages
    flat = parallel.reshape(15, 4)
    groups = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(5)]
    assert alignment_groups(flat, groups) == pytest.approx(alignment(parallel))
    # partial groups (MLQA: a question exists in some languages only): mean over the pairs present
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
    # pairs: (0,1): 25, (0,2): 1, (1,2): 18; (3,4): 128 -> mean 43
    assert alignment_groups(x, [[0, 1, 2], [3, 4]]) == pytest.approx((25 + 1 + 18 + 128) / 4)
    with pytest.raises(ValueError):
        alignment_groups(x, [[0]])
