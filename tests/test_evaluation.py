"""clibd.eval.retrieval: the seen/unseen protocol on synthetic embeddings whose answers are known."""

import json
import math

import faiss
import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import normalize

from clibd.config import MEAN_TOP1
from clibd.eval.retrieval import evaluate_retrieval, faiss_tie_order, flat_metrics, write_results
from clibd.index.faiss_index import ReferenceIndex, normalized_float32
from clibd.taxonomy import EVAL_RANKS

N_SPECIES = 8  # species 0..5 seen, 6..7 unseen; genus = species // 2, family = species // 4
SEEN, UNSEEN = range(6), range(6, 8)


def _labels(species: np.ndarray) -> pd.DataFrame:
    def names(prefix: str, values: np.ndarray) -> pd.arrays.StringArray:
        return pd.array([f"{prefix}{v}" for v in values], dtype="string")

    return pd.DataFrame(
        {
            "order": names("O", species * 0),
            "family": names("F", species // 4),
            "genus": names("G", species // 2),
            "species": names("S", species),
        }
    )


def _onehot(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.eye(N_SPECIES)[classes] + 0.05 * rng.normal(size=(len(classes), N_SPECIES))


def _image_class(species: np.ndarray) -> np.ndarray:
    """Image tower that confuses each species with its sister in the genus, except species 0."""
    return np.where(species == 0, 0, species ^ 1)


def _queries(species: np.ndarray, rng: np.random.Generator) -> dict:
    labels = _labels(species)
    return {
        "image": (_onehot(_image_class(species), rng), labels),
        "dna": (_onehot(species, rng), labels),
        "text": (_onehot(species, rng), labels),
    }


@pytest.fixture(scope="module")
def setup() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    key_species = np.repeat(np.arange(N_SPECIES), 6)  # seen keys and unseen keys together
    keys = {"image": (_onehot(_image_class(key_species), rng), _labels(key_species))}
    keys["dna"] = (_onehot(key_species, rng), _labels(key_species))
    keys["text"] = (_onehot(key_species, rng), _labels(key_species))  # text of the same key specimens
    # Unequal class sizes so micro and macro differ: species 0 has 10 queries, the others 2.
    seen_species = np.concatenate([np.zeros(10, int), np.repeat(np.arange(1, 6), 2)])
    unseen_species = np.repeat(np.array(list(UNSEEN)), 3)
    queries = {"seen": _queries(seen_species, rng), "unseen": _queries(unseen_species, rng)}
    return queries, keys


def test_schema_and_known_accuracies(setup) -> None:
    queries, keys = setup
    ev = evaluate_retrieval(queries, keys, ks=(1, 3, 5))
    assert list(ev.results) == [f"{q}->{k}" for q in ("image", "dna", "text") for k in ("image", "dna", "text")]
    for by_role in ev.results.values():
        assert set(by_role) == {"seen", "unseen", "harmonic_mean"}
        for by_avg in by_role.values():
            assert set(by_avg) == {"micro", "macro"}
            for by_rank in by_avg.values():
                assert list(by_rank) == list(EVAL_RANKS)
                for by_top in by_rank.values():
                    assert set(by_top) == {"top1", "top3", "top5"}
                    assert all(0.0 <= v <= 1.0 for v in by_top.values())

    # DNA finds its own species, seen and unseen: unseen queries reach the unseen keys.
    dna = ev.results["dna->dna"]
    for role in ("seen", "unseen", "harmonic_mean"):
        assert dna[role]["macro"]["species"]["top1"] == 1.0
    # Images land on the sister species (same genus) except species 0.
    image_dna = ev.results["image->dna"]
    assert image_dna["seen"]["macro"]["species"]["top1"] == pytest.approx(1 / 6)
    assert image_dna["seen"]["micro"]["species"]["top1"] == pytest.approx(10 / 20)
    assert image_dna["unseen"]["macro"]["species"]["top1"] == 0.0
    assert image_dna["harmonic_mean"]["macro"]["species"]["top1"] == 0.0
    assert image_dna["seen"]["macro"]["genus"]["top1"] == 1.0
    # Each species has 6 keys: top-5 of a confused image query holds only the sister species.
    assert image_dna["seen"]["macro"]["species"]["top5"] == pytest.approx(1 / 6)
    # Image->image: query and key images are confused the same way, so species is exact.
    assert ev.results["image->image"]["unseen"]["macro"]["species"]["top1"] == 1.0
    assert ev.results["image->text"]["seen"]["macro"]["genus"]["top1"] == 1.0

    assert ev.counts == {
        "queries": {"seen": {"image": 20, "dna": 20, "text": 20}, "unseen": {"image": 6, "dna": 6, "text": 6}},
        "keys": {"image": 48, "dna": 48, "text": 48},
    }
    flat = flat_metrics(ev.results)
    assert flat["dna->dna/macro/species/top1/harmonic_mean"] == 1.0
    assert flat["image->dna/micro/species/top1/seen"] == pytest.approx(0.5)
    assert len(flat) == 9 * 3 * 2 * 4 * 3 + 1  # every pair, role, average, rank and k, and mean_top1
    top1 = [v for k, v in flat.items() if k.endswith(("/top1/seen", "/top1/unseen"))]
    assert flat[MEAN_TOP1] == pytest.approx(sum(top1) / len(top1))


def test_unseen_queries_need_the_unseen_keys(setup) -> None:
    queries, keys = setup
    emb, labels = keys["dna"]
    seen_only = labels["species"].isin([f"S{s}" for s in SEEN]).to_numpy()
    ev = evaluate_retrieval({"unseen": {"dna": queries["unseen"]["dna"]}}, {"dna": (emb[seen_only], labels[seen_only])})
    result = ev.results["dna->dna"]
    assert set(result) == {"unseen"}  # no harmonic mean without seen queries
    assert result["unseen"]["macro"]["species"]["top5"] == 0.0  # their species is absent: never found
    assert result["unseen"]["macro"]["order"]["top1"] == 1.0


def test_unknown_labels_are_left_out_and_names_are_coded_together(setup) -> None:
    queries, keys = setup
    emb, labels = queries["seen"]["dna"]
    labels = labels.copy()
    labels.loc[:4, "species"] = pd.NA  # five species-0 queries lose their species
    # Keys given in a different row order: codes come from names, not positions.
    key_emb, key_labels = keys["dna"]
    order = np.random.default_rng(1).permutation(len(key_emb))
    ev = evaluate_retrieval(
        {"seen": {"dna": (emb, labels)}}, {"dna": (key_emb[order], key_labels.iloc[order])}, ks=(1,)
    )
    assert ev.results["dna->dna"]["seen"]["micro"]["species"]["top1"] == 1.0
    species_rows = ev.per_class[(ev.per_class["rank"] == "species")]
    assert dict(zip(species_rows["class"], species_rows["n_queries"])) == {
        "S0": 5,
        "S1": 2,
        "S2": 2,
        "S3": 2,
        "S4": 2,
        "S5": 2,
    }


def test_bad_inputs_are_named(setup) -> None:
    queries, keys = setup
    emb, labels = queries["seen"]["dna"]
    with pytest.raises(ValueError, match="query roles must be among"):
        evaluate_retrieval({"test": {"dna": (emb, labels)}}, keys)
    with pytest.raises(ValueError, match="seen dna queries: embeddings .* do not match 19 label rows"):
        evaluate_retrieval({"seen": {"dna": (emb, labels.iloc[1:])}}, keys)
    with pytest.raises(ValueError, match=r"dna->dna: seen queries are 4-d, keys 8-d"):
        evaluate_retrieval({"seen": {"dna": (emb[:, :4], labels)}}, {"dna": keys["dna"]})
    with pytest.raises(ValueError, match=r"dna keys: labels lack rank columns \['species'\]"):
        evaluate_retrieval(
            {"seen": {"dna": (emb, labels)}}, {"dna": (keys["dna"][0], keys["dna"][1].drop(columns="species"))}
        )


def test_write_results_files(setup, tmp_path) -> None:
    queries, keys = setup
    labels = queries["unseen"]["dna"][1].copy()
    labels["species"] = pd.NA  # a rank without labelled queries: NaN, written as null
    queries = {"seen": queries["seen"], "unseen": {"dna": (queries["unseen"]["dna"][0], labels)}}
    ev = evaluate_retrieval(queries, {"dna": keys["dna"]})
    meta = {"checkpoint": "runs/demo/best", "dataset": "demo", "split": "test", "counts": ev.counts}
    paths = write_results(ev.results, meta, tmp_path / "eval", ev.per_class)

    doc = json.loads(paths["json"].read_text())
    assert doc["meta"] == meta
    assert set(doc) == {"meta", "image->dna", "dna->dna", "text->dna"}
    assert doc["dna->dna"]["unseen"]["macro"]["species"]["top1"] is None
    assert doc["dna->dna"]["harmonic_mean"]["macro"]["species"]["top1"] is None
    assert doc["dna->dna"]["unseen"]["macro"]["genus"]["top1"] == 1.0
    assert math.isnan(ev.results["dna->dna"]["unseen"]["micro"]["species"]["top1"])

    md = paths["markdown"].read_text()
    assert "checkpoint: runs/demo/best, dataset: demo, split: test" in md
    # macro top-1, species first; image->dna has no unseen queries here: "-"
    assert "| image->dna | 16.7 | - | - | 100.0 | - | - |" in md
    assert "| dna->dna | 100.0 | - | - | 100.0 |" in md
    assert md.index("## Macro") < md.index("## Micro")

    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(paths["per_class"])
    assert list(table.columns) == ["pair", "role", "rank", "class", "n_queries", "top1", "top3", "top5"]
    row = table[(table["pair"] == "image->dna") & (table["rank"] == "species") & (table["class"] == "S0")]
    assert row[["n_queries", "top1"]].values.tolist() == [[10, 1.0]]


# ---- the published evaluation's search, as FAISS and scikit-learn do it ---------------------------------


@pytest.mark.parametrize("n_queries", [7, 45])  # FAISS's flat search takes another path from 20 queries on
def test_neighbours_come_in_faiss_flat_order_ties_included(n_queries: int) -> None:
    """``faiss_tie_order`` of our search's (score, position) gives what FAISS's IndexFlatIP itself returns,
    as the published ``make_prediction`` took it: 40 keys on 5 directions tie in groups of about 8."""
    rng = np.random.default_rng(n_queries)
    directions = rng.normal(size=(5, 6))
    keys = directions[rng.integers(0, 5, 40)] * rng.uniform(0.5, 2.0, (40, 1))  # scaled: ties after normalising
    queries = np.concatenate([directions, rng.normal(size=(n_queries - 5, 6))])
    index = ReferenceIndex(6, kind="flat", device="cpu")
    index.add(keys, ids=[str(i) for i in range(40)])
    scores, positions = index.search(queries, 9)
    flat = faiss.IndexFlatIP(6)
    flat.add(normalize(keys, norm="l2", axis=1).astype(np.float32))
    _, expected = flat.search(normalize(queries, norm="l2", axis=1).astype(np.float32), 9)
    assert np.array_equal(faiss_tie_order(scores, positions), expected)
    tied = scores[:5, 0:1] == scores[:5]
    assert tied.sum(axis=1).min() >= 2 and not np.array_equal(positions, expected)  # ties, in another order


def test_index_normalises_as_scikit_learn_does_in_float64() -> None:
    """The published evaluation normalised the float64 features (.tolist() of the model's float32 output)
    with scikit-learn, then cast to float32: the same bits, float32 or float64 input."""
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    expected = normalize(x.astype(np.float64), norm="l2", axis=1).astype(np.float32)
    assert np.array_equal(normalized_float32(x, "x"), expected)
    mean = (x[:100].astype(np.float64) + x[100:]) / 2  # the fused image+DNA mean, in float64 as np.mean there
    assert np.array_equal(normalized_float32(mean, "x"), normalize(mean, norm="l2", axis=1).astype(np.float32))


def test_unlabelled_queries_drop_or_count_as_the_class_not_classified() -> None:
    """Two keys, three queries; the species of key 1 and queries 1-2 is missing. Query 1's nearest key is
    key 1: with ``class`` both are ``not_classified``, a hit, as the published code counts it."""
    keys = np.array([[1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 0.0]])
    labels = pd.DataFrame({rank: ["A", "B", "A"] for rank in EVAL_RANKS}).astype("string")
    key_labels = pd.DataFrame({rank: ["A", "B"] for rank in EVAL_RANKS}).astype("string")
    labels.loc[[1, 2], "species"] = pd.NA
    key_labels.loc[1, "species"] = pd.NA
    inputs = ({"seen": {"dna": (queries, labels)}}, {"dna": (keys, key_labels)})
    dropped = evaluate_retrieval(*inputs, ks=(1,)).results["dna->dna"]["seen"]
    counted = evaluate_retrieval(*inputs, ks=(1,), unlabelled="class").results["dna->dna"]["seen"]
    assert dropped["micro"]["species"]["top1"] == 1.0  # only query 0 is scored
    assert dropped["macro"]["species"]["top1"] == 1.0
    # class: query 0 right (A), query 1 right (not_classified = not_classified), query 2 wrong (finds A).
    assert counted["micro"]["species"]["top1"] == pytest.approx(2 / 3)
    assert counted["macro"]["species"]["top1"] == pytest.approx((1 + 1 / 2) / 2)  # classes A and not_classified
    assert counted["micro"]["genus"] == dropped["micro"]["genus"]  # known ranks are not touched
    with pytest.raises(ValueError, match="unlabelled must be 'drop' or 'class', got 'keep'"):
        evaluate_retrieval(*inputs, ks=(1,), unlabelled="keep")
