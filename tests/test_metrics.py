"""clibd.eval.metrics: hand-computed cases and equality with the per-query reference."""

import math

import numpy as np
import pytest

from clibd.eval.metrics import harmonic_mean, per_class_accuracy, topk_accuracy
from tests.oracles import topk_accuracy_reference

SPECIES = ("species",)


def _one_rank(query: list[int], neighbours: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(query)[:, None], np.array(neighbours)[:, :, None]


def test_topk_hand_computed() -> None:
    # q0 found at 1; q1 found only at 3; q2's class 2 is absent from the keys: never found.
    q, n = _one_rank([0, 1, 2], [[0, 1, 1], [0, 0, 1], [0, 1, 0]])
    acc = topk_accuracy(q, n, ks=(1, 2, 3), ranks=SPECIES)
    assert acc["micro"]["species"] == pytest.approx({"top1": 1 / 3, "top2": 1 / 3, "top3": 2 / 3})
    assert acc["macro"]["species"] == pytest.approx({"top1": 1 / 3, "top2": 1 / 3, "top3": 2 / 3})


def test_macro_averages_classes_not_queries() -> None:
    # Class 0: 3 of 3 right; class 1: 0 of 1. Micro 3/4, macro (1 + 0) / 2.
    q, n = _one_rank([0, 0, 0, 1], [[0], [0], [0], [0]])
    acc = topk_accuracy(q, n, ks=(1,), ranks=SPECIES)
    assert acc["micro"]["species"]["top1"] == pytest.approx(0.75)
    assert acc["macro"]["species"]["top1"] == pytest.approx(0.5)


def test_label_among_k_nearest_not_majority() -> None:
    # The true label is the 3rd neighbour, outvoted 2:1: still correct at top-3.
    q, n = _one_rank([5], [[7, 7, 5]])
    acc = topk_accuracy(q, n, ks=(1, 3), ranks=SPECIES)
    assert acc["micro"]["species"] == {"top1": 0.0, "top3": 1.0}


def test_unknown_query_labels_are_excluded_per_rank() -> None:
    # Query 0 has no species (but a genus); unknown neighbour labels (-1) never match.
    q = np.array([[3, -1], [4, 9]])
    n = np.array([[[3, -1]], [[4, 8]]])
    acc = topk_accuracy(q, n, ks=(1,), ranks=("genus", "species"))
    assert acc["micro"]["genus"]["top1"] == 1.0
    assert acc["micro"]["species"]["top1"] == 0.0  # only query 1 counts at species, and it misses
    all_unknown = topk_accuracy(np.array([[-1], [-1]]), np.array([[[-1]], [[0]]]), ks=(1,), ranks=SPECIES)
    assert math.isnan(all_unknown["micro"]["species"]["top1"])
    assert math.isnan(all_unknown["macro"]["species"]["top1"])


def test_bad_shapes_and_ks_are_refused() -> None:
    q, n = _one_rank([0, 1], [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="ks"):
        topk_accuracy(q, n, ks=(1, 3), ranks=SPECIES)
    with pytest.raises(ValueError, match="does not match"):
        topk_accuracy(q[:1], n, ks=(1,), ranks=SPECIES)
    with pytest.raises(ValueError, match="rank names"):
        topk_accuracy(q, n, ks=(1,), ranks=("genus", "species"))


@pytest.mark.parametrize("seed, ks", [(0, (1, 3, 5, 7)), (1, (1, 3, 5, 7)), (2, (2, 7)), (3, (1, 9, 20)), (4, (5,))])
def test_equals_per_query_reference_on_random_data(seed: int, ks: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    ranks = ("order", "family", "genus", "species")
    n_classes = np.array([3, 8, 20, 60])
    q = rng.integers(-1, n_classes, size=(400, 4))  # includes -1 (unknown)
    # Neighbours mostly near the truth so every k is informative; some random, some unknown.
    shape = (400, max(ks) + 1, 4)  # one neighbour more than scored: it must be ignored
    neighbours = np.where(rng.random(shape) < 1 / max(ks), q[:, None, :], rng.integers(-1, n_classes, size=shape))
    got = topk_accuracy(q, neighbours, ks, ranks)
    want = topk_accuracy_reference(q, neighbours, ks, ranks)
    for avg in ("micro", "macro"):
        for rank in ranks:
            assert got[avg][rank] == pytest.approx(want[avg][rank], abs=1e-12), (avg, rank)


def test_per_class_table() -> None:
    q, n = _one_rank([0, 0, 2, -1], [[0, 2], [1, 0], [0, 1], [0, 0]])
    table = per_class_accuracy(q, n, ks=(1, 2), ranks=SPECIES, class_names={"species": ["A a", "B b", "C c"]})
    assert table["class"].tolist() == ["A a", "C c"]  # class 1 has no query; the unknown query is left out
    assert table["n_queries"].tolist() == [2, 1]
    assert table["top1"].tolist() == [0.5, 0.0]
    assert table["top2"].tolist() == [1.0, 0.0]
    # The macro accuracy is the mean of the per-class rows.
    assert topk_accuracy(q, n, ks=(1,), ranks=SPECIES)["macro"]["species"]["top1"] == pytest.approx(0.25)


def test_harmonic_mean() -> None:
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert harmonic_mean(0.8, 0.8) == pytest.approx(0.8)
    assert harmonic_mean(0.0, 0.9) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 0.5))
