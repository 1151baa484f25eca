"""Prediction by weighted vote, the new-species threshold, and `clibd classify` end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clibd.classify import calibrate_threshold, predict_taxonomy, weighted_vote


def test_weighted_vote_hand_computed() -> None:
    scores = np.array(
        [
            [0.9, 0.5, 0.45],  # A 0.9 vs B 0.95: B wins with 0.95 / 1.85
            [0.8, 0.8, 0.1],  # A 0.8 vs B 0.8 tie -> nearer key's label A; C 0.1
            [0.7, 0.6, 0.5],  # first neighbour unknown: only B and A vote
            [0.3, 0.2, 0.1],  # nobody labelled
            [0.5, -0.4, -0.9],  # negative similarities weigh ~0, never against
        ]
    )
    labels = np.array([[0, 1, 1], [0, 1, 2], [-1, 1, 0], [-1, -1, -1], [2, 0, 0]])
    winner, share, best = weighted_vote(scores, labels)
    np.testing.assert_array_equal(winner, [1, 0, 1, -1, 2])
    np.testing.assert_allclose(share[:3], [0.95 / 1.85, 0.8 / 1.7, 0.6 / 1.1])
    assert np.isnan(share[3]) and np.isnan(best[3])
    assert share[4] == pytest.approx(0.5 / (0.5 + 2e-6))
    np.testing.assert_allclose(best[[0, 1, 2, 4]], [0.5, 0.8, 0.6, 0.5])


def _keys() -> tuple[pd.DataFrame, list[str]]:
    taxonomy = pd.DataFrame(
        {
            "order": ["Diptera", "Diptera", "Hymenoptera"],
            "family": ["Cecidomyiidae", "Sciaridae", "Braconidae"],
            "genus": ["Aus", "Bus", pd.NA],
            "species": [pd.NA, "Bus cus", pd.NA],
        },
        dtype="string",
    )
    return taxonomy, ["K0", "K1", "K2"]


def test_predict_taxonomy_rows_and_flags() -> None:
    taxonomy, key_ids = _keys()
    scores = np.array([[0.9, 0.8, 0.1], [0.4, 0.3, -1.0]])
    positions = np.array([[1, 0, 2], [2, 0, -1]])
    table = predict_taxonomy(scores, positions, taxonomy, key_ids, ["q1", "q2"], threshold=0.5)
    assert list(table["id"]) == ["q1", "q2"]
    assert list(table["order"]) == ["Diptera", "Hymenoptera"]  # q2: 0.4 vs 0.3, padded slot ignored
    assert table.loc[0, "order_vote_share"] == pytest.approx(1.7 / 1.8)
    assert table.loc[0, "family"] == "Sciaridae" and table.loc[0, "species"] == "Bus cus"
    assert table.loc[1, "genus"] == "Aus"  # the only labelled genus among q2's neighbours
    assert table.loc[1, "genus_similarity"] == pytest.approx(0.3)
    assert table.loc[1, "genus_vote_share"] == pytest.approx(1.0)
    assert pd.isna(table.loc[1, "species"])
    assert list(table["nearest_id"]) == ["K1", "K2"]
    assert list(table["possible_new_species"]) == [False, True]


def test_predict_taxonomy_rejects_mismatched_shapes() -> None:
    taxonomy, key_ids = _keys()
    with pytest.raises(ValueError, match="do not match"):
        predict_taxonomy(np.zeros((2, 3)), np.zeros((2, 2), dtype=int), taxonomy, key_ids, ["a", "b"], 0.5)


def test_calibrate_threshold_separable_and_overlapping() -> None:
    cal = calibrate_threshold(np.array([0.9, 0.8, 0.85]), np.array([0.3, 0.5, 0.4]))
    assert cal.threshold == pytest.approx(0.65) and cal.balanced_accuracy == 1.0
    # seen 0.9 0.6 0.4, unseen 0.5 0.3: best split 0.45 < t <= 0.5 -> (2/3 + 1) / 2
    cal = calibrate_threshold(np.array([0.9, 0.6, 0.4]), np.array([0.5, 0.3]))
    assert cal.threshold == pytest.approx(0.55)
    assert cal.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    assert (cal.seen_kept, cal.unseen_flagged, cal.n_seen, cal.n_unseen) == (pytest.approx(2 / 3), 1.0, 3, 2)


def test_calibrate_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    seen, unseen = rng.normal(0.7, 0.1, 57), rng.normal(0.55, 0.1, 31)
    cal = calibrate_threshold(seen, unseen)
    grid = np.linspace(0, 1.2, 4001)
    brute = max(((seen >= t).mean() + (unseen < t).mean()) / 2 for t in grid)
    assert cal.balanced_accuracy == pytest.approx(brute, abs=1e-12)
    assert ((seen >= cal.threshold).mean() + (unseen < cal.threshold).mean()) / 2 == cal.balanced_accuracy


def test_calibrate_threshold_needs_both_sets() -> None:
    with pytest.raises(ValueError, match="0 unseen"):
        calibrate_threshold(np.array([0.5]), np.array([]))
