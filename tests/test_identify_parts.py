"""The parts of identification against your own data (docs/identify.md), each on hand-made or
real inputs with exact answers: reverse complements and the strand model, % identity of hits and
the re-rank by it, each rank's margin and rule, the deepest confident rank, and data.split=auto."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clibd.index.identity import Rerank, hit_identity, rerank_by_identity
from clibd.index.key_barcodes import KeyBarcodes
from clibd.index.strand import StrandModel, reverse_complement
from clibd.index.vote import apply_rank_thresholds, calibrate_rank, name_margin, predict_taxonomy
from tests.data_paths import BOLD_4K, needs_shared_data


def _mutated(base: str, positions: list[int]) -> str:
    """``base`` with a substitution (A->C->G->T->A) at each of ``positions``."""
    seq = list(base)
    for i in positions:
        seq[i] = "ACGT"[("ACGT".index(seq[i]) + 1) % 4]
    return "".join(seq)


BASE = "".join(np.random.default_rng(0).choice(list("ACGT"), 300))


def test_reverse_complement_iupac_case_gaps_and_empty() -> None:
    assert reverse_complement(["ACGTn-R", "", "AAC", "acgtRYKMBVDHSWN"]) == [
        "Y-nACGT",
        "",
        "GTT",
        "NWSDHBVKMRYacgt",
    ]
    assert reverse_complement([]) == []


def test_strand_scores_are_antisymmetric_and_orient_reads() -> None:
    references = [_mutated(BASE, [i, 2 * i + 1]) for i in range(20)]
    model, reverse = StrandModel.fit(references)
    assert not reverse.any()
    queries = [_mutated(BASE, [7]), _mutated(BASE, [100, 200])]
    flipped = reverse_complement(queries)
    np.testing.assert_allclose(model.scores(flipped), -model.scores(queries), rtol=1e-6)
    oriented, strand = model.orient([*queries, *flipped, "ACGT"])  # a read with no 8-mer is kept as given
    assert oriented == [*queries, *queries, "ACGT"] and strand.tolist() == ["+", "+", "-", "-", "+"]


def test_strand_model_file_round_trip_and_bad_shape(tmp_path) -> None:
    model, _ = StrandModel.fit([BASE])
    model.save(tmp_path)
    np.testing.assert_array_equal(StrandModel.load(tmp_path).weights, model.weights)
    assert StrandModel.load(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="one value per 8-mer"):
        StrandModel(np.zeros(10))


@needs_shared_data
def test_reverse_strand_reference_rows_are_found_on_real_barcodes() -> None:
    barcodes = pd.read_csv(BOLD_4K, sep="\t", usecols=["nucleotides"])["nucleotides"].tolist()
    flip = np.random.default_rng(1).random(len(barcodes)) < 0.05
    given = np.array(barcodes, dtype=object)
    given[flip] = reverse_complement(given[flip].tolist())
    _, reverse = StrandModel.fit(given.tolist())
    assert flip.sum() > 150 and np.array_equal(reverse, flip)  # every reversed row, and only those


def test_hit_identity_exact_values() -> None:
    keys = KeyBarcodes([_mutated(BASE, [10, 20, 30]), BASE, None, BASE[:80]])
    found = hit_identity([BASE, None], np.array([[0, 1, 2, 3, -1], [0, 1, 2, 3, -1]]), keys)
    np.testing.assert_allclose(found.identity[0, :2], [99.0, 100.0])
    assert np.isnan(found.identity[0, 2:]).all()  # no barcode; 80 columns < 100; no key
    assert found.overlap[0].tolist() == [300, 300, 0, 80, 0]
    assert np.isnan(found.identity[1]).all() and (found.overlap[1] == 0).all()  # no query barcode


def test_rerank_aligns_every_candidate_in_the_margin_and_orders_species_by_their_best() -> None:
    keys = KeyBarcodes(
        [_mutated(BASE, range(0, 300, 10)), _mutated(BASE, [5, 6, 7]), _mutated(BASE, [1]), BASE, BASE, BASE]
    )
    species = pd.Series(["a", "b", "b", None, "c", "b"], dtype="string")
    rerank = Rerank.for_library(species, candidates=6, margin=0.1)
    scores = np.array([[0.9, 0.88, 0.85, 0.79, 0.5, 0.4]])
    found = rerank_by_identity([BASE], scores, np.array([[0, 1, 2, 3, 4, 5]]), keys, rerank)
    # In the margin (>= 0.8): keys 0 (a, 90 %), 1 (b, 99 %) and 2 (b, 99.67 %), each aligned. Species b
    # comes first by its best key, key 2, though key 1 is nearer by cosine; then a. Keys 3, 4 and 5 lie
    # beyond the margin and keep their cosine order, though all are 100 % identical (key 5 is b's too).
    assert found.positions.tolist() == [[2, 1, 0, 3, 4, 5]] and found.aligned == 3
    np.testing.assert_allclose(found.identity.identity[0, :3], [100 * 299 / 300, 99.0, 90.0])
    assert np.isnan(found.identity.identity[0, 3:]).all()
    np.testing.assert_allclose(found.scores, [[0.85, 0.88, 0.9, 0.79, 0.5, 0.4]])
    with pytest.raises(ValueError, match="at least 1 candidate"):
        Rerank.for_library(species, candidates=0)


def test_key_barcodes_round_trip_and_count_check(tmp_path) -> None:
    KeyBarcodes(["AC", None, "GGT"]).save(tmp_path)
    loaded = KeyBarcodes.load(tmp_path, expected=3)
    assert loaded.take(np.array([[2, -1], [1, 0]])) == ["GGT", None, None, "AC"]
    with pytest.raises(ValueError, match="holds 3 barcodes for 4 keys"):
        KeyBarcodes.load(tmp_path, expected=4)
    assert KeyBarcodes.load(tmp_path / "none", expected=3) is None


def test_name_margin_to_the_nearest_other_name() -> None:
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.6], [0.9, -np.inf, -np.inf]])
    labels = np.array([[0, 0, 1], [0, -1, 0], [0, -1, -1]])
    winner, best = np.array([0, 0, 0]), np.array([0.9, 0.9, 0.9])
    # another name at 0.7; no other known name: the gap to the last candidate (0.6); only one candidate: 0.
    np.testing.assert_allclose(name_margin(scores, labels, winner, best), [0.2, 0.3, 0.0])


def test_each_rank_has_its_own_margin_in_predictions() -> None:
    taxonomy = pd.DataFrame(
        {
            "order": ["O1", "O1", "O1", "O2"],
            "family": ["F1", "F1", "F2", "F3"],
            "genus": ["G1", "G2", "G3", "G4"],
            "species": ["S1", "S2", "S3", "S4"],
        },
        dtype="string",
    )
    scores, positions = np.array([[0.95, 0.9, 0.8, 0.5]]), np.array([[0, 1, 2, 3]])
    table = predict_taxonomy(scores, positions, taxonomy, ["K0", "K1", "K2", "K3"], ["q"], 0.5, k=1)
    margins = [table.loc[0, f"{rank}_margin"] for rank in ("order", "family", "genus", "species")]
    np.testing.assert_allclose(margins, [0.45, 0.15, 0.05, 0.05])  # nearest other order 0.5, family 0.8, genus 0.9
    assert table.loc[0, "species_similarity"] == pytest.approx(0.95) and table.loc[0, "order_vote_share"] == 1.0


def test_deepest_confident_rank_stops_at_the_first_rank_below_its_threshold() -> None:
    table = pd.DataFrame(
        {
            "order": ["O", "O", "O", "O"],
            "family": ["F", "F", "F", "F"],
            "genus": ["G", "G", "G", "G"],
            "species": ["S", "S", "S", "S"],
            "possible_new_species": pd.array([False, False, True, None], dtype="boolean"),
        }
    )
    scores = {rank: np.array([0.9, 0.9, 0.9, 0.9]) for rank in ("order", "family", "genus", "species")}
    scores["family"] = np.array([0.9, 0.5, 0.9, 0.9])  # row 1 fails family: genus would pass, but the cut is made
    thresholds = {rank: np.array([0.8, 0.8, 0.8, np.nan]) for rank in ("order", "family", "genus", "species")}
    judged = apply_rank_thresholds(table, scores, thresholds)
    assert judged["deepest_confident_rank"].fillna("-").tolist() == ["species", "order", "genus", "-"]
    assert judged.loc[1, ["family", "genus", "species"]].isna().all() and judged.loc[1, "order"] == "O"
    assert pd.isna(judged.loc[2, "species"]) and judged.loc[2, "genus"] == "G"  # a possible new species is not named
    assert judged.loc[3, ["order", "family", "genus", "species"]].tolist() == ["O", "F", "G", "S"]  # no rule: kept


def test_calibrate_rank_takes_the_score_that_separates_best() -> None:
    correct = np.array([True, True, True, False, False])
    scores = {"similarity": np.array([0.9, 0.5, 0.8, 0.7, 0.6]), "margin": np.array([0.3, 0.2, 0.25, 0.1, np.nan])}
    rule = calibrate_rank(scores, correct)
    assert (rule["rule"], rule["score"], rule["balanced_accuracy"]) == ("threshold", "margin", 1.0)
    assert rule["threshold"] == pytest.approx(0.15) and (rule["n_correct"], rule["n_wrong"]) == (3, 2)
    assert calibrate_rank(scores, np.ones(5, bool))["rule"] == "always"
    assert calibrate_rank(scores, np.zeros(5, bool))["rule"] == "never"


def test_calibration_hold_out_caps_the_queries_and_never_keys_a_held_out_species() -> None:
    from clibd.index.table_library import hold_out

    species = np.repeat(["G a", "G b", "H c", "H d", "I e"], 10)
    table = pd.DataFrame({"processid": [f"p{i}" for i in range(50)], "genus": [s[0] for s in species]})
    table["species"] = species
    table.loc[49, ["genus", "species"]] = None  # a row without a species: a key only
    full, capped = hold_out(table, seed=0), hold_out(table, seed=0, most=5)
    counts = pd.Series(full).value_counts().to_dict()
    # G, H: one unseen species each; the seen ones halved (5 + 5 keys, I e's 9 rows 5 + 4); the unlabelled row a key
    assert counts == {"query_unseen": 20, "key": 16, "query_seen": 14}
    assert pd.Series(capped).value_counts().to_dict() == {"key": 16, "unused": 24, "query_seen": 5, "query_unseen": 5}
    assert (capped[full == "key"] == "key").all() and not (capped[full == "query_unseen"] == "key").any()
