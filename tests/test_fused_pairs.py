"""The published system's fused image+DNA evaluation pairs, and evaluation with an empty query role."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from accelerate import PartialState

from clibd.eval.fused import ALL_KEYS, AVG, CONCAT, with_fused_features
from clibd.eval.retrieval import evaluate_retrieval

RANKS = ("order", "family", "genus", "species")


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # the towers' outputs are L2-normalised


def _rows(pids: list[str], species: list[str]) -> pd.DataFrame:
    table = {"processid": pids, "order": "O", "family": "F", "genus": "G", "species": species}
    return pd.DataFrame(table).astype("string")


# Three key specimens (species A, B, C) and one query of species A, 2-d, picked so that image
# and DNA alone each find the wrong key (C and B) while their mean and concatenation find A.
KEY_IMAGE = _unit([[1, 1], [-1, 1], [1, 0]])
KEY_DNA = _unit([[-2, -3], [1, -3], [-2, 1]])
KEY_TEXT = _unit([[0, 1], [1, 0], [-1, -1]])
QUERY_IMAGE = _unit([[3, -2]])
QUERY_DNA = _unit([[0, -1]])


def oracle_top1(query: np.ndarray, keys: np.ndarray, key_species: list[str]) -> list[str]:
    """The original's search: L2-normalise both sides, inner product, the best key's label."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    return [key_species[i] for i in np.argmax(q @ k.T, axis=1)]


def _setup():
    keys_rows = _rows(["a", "b", "c"], ["A", "B", "C"])
    # DNA keys come back in another order (as after a left-out row): fusion pairs by processid.
    order = [2, 0, 1]
    keys = {
        "image": (KEY_IMAGE, keys_rows),
        "dna": (KEY_DNA[order], keys_rows.iloc[order].reset_index(drop=True)),
        "text": (KEY_TEXT, keys_rows),
    }
    q_rows = _rows(["q"], ["A"])
    queries = {"seen": {"image": (QUERY_IMAGE, q_rows), "dna": (QUERY_DNA, q_rows)}}
    return queries, keys


def test_fused_features_are_the_mean_and_the_concatenation_of_the_same_specimen():
    queries, keys = _setup()
    fused_queries, fused_keys, _ = with_fused_features(queries, keys)
    np.testing.assert_allclose(fused_keys[AVG][0], (KEY_IMAGE + KEY_DNA) / 2, rtol=0, atol=1e-7)
    np.testing.assert_allclose(fused_keys[CONCAT][0], np.concatenate([KEY_IMAGE, KEY_DNA], axis=1), rtol=0, atol=1e-7)
    assert fused_keys[CONCAT][1]["processid"].tolist() == ["a", "b", "c"]
    # "all": image, DNA (in its own row order) and text keys stacked, each row with its labels.
    assert fused_keys[ALL_KEYS][0].shape == (9, 2)
    assert fused_keys[ALL_KEYS][1]["species"].tolist() == ["A", "B", "C", "C", "A", "B", "A", "B", "C"]
    np.testing.assert_allclose(fused_queries["seen"][AVG][0], (QUERY_IMAGE + QUERY_DNA) / 2, rtol=0, atol=1e-7)


def test_fused_pairs_and_their_scores_match_the_original_search():
    queries, keys = _setup()
    fused_queries, fused_keys, pairs = with_fused_features(queries, keys)
    names = [f"{q}->{k}" for q, k in pairs]
    assert names == [  # query-major; concat is 4-d, so it meets only the concat keys
        "image->image", "image->dna", "image->text", "image->image_dna_mean", "image->all",
        "dna->image", "dna->dna", "dna->text", "dna->image_dna_mean", "dna->all",
        "image_dna_mean->image", "image_dna_mean->dna", "image_dna_mean->text",
        "image_dna_mean->image_dna_mean", "image_dna_mean->all", "image_dna_concat->image_dna_concat",
    ]  # fmt: skip
    results = evaluate_retrieval(fused_queries, fused_keys, ks=(1,), pairs=pairs).results
    assert list(results) == names
    for q, k in pairs:
        key_emb, key_rows = fused_keys[k]
        expected = oracle_top1(fused_queries["seen"][q][0], key_emb, key_rows["species"].tolist())
        got = results[f"{q}->{k}"]["seen"]["micro"]["species"]["top1"]
        assert got == float(expected == ["A"]), f"{q}->{k}"
    top1 = {pair: results[pair]["seen"]["micro"]["species"]["top1"] for pair in names}
    assert top1["image->image"] == 0.0 and top1["dna->dna"] == 0.0  # C and B
    assert top1["image_dna_mean->image_dna_mean"] == 1.0 and top1["image_dna_concat->image_dna_concat"] == 1.0


def test_fused_pairs_need_image_and_dna():
    queries, keys = _setup()
    with pytest.raises(ValueError, match=r"eval.fused_pairs: .*need image and DNA embeddings; \[.keys.\] lack one"):
        with_fused_features(queries, {"image": keys["image"], "text": keys["text"]})


def test_evaluation_reports_an_empty_query_role_and_scores_the_other(tmp_path):

    from clibd.config import Config, DataConfig, EvalConfig
    from clibd.eval.evaluator import RetrievalEvaluator
    from clibd.taxonomy import taxonomy_text
    from tests.helpers.bioscan_root import bioscan5m_metadata, make_bioscan5m_root
    from tests.helpers.tiny_checkpoint import tiny_model

    meta = bioscan5m_metadata()
    make_bioscan5m_root(tmp_path / "root", meta[meta["split"] != "val_unseen"])
    cfg = Config(
        data=DataConfig(root=str(tmp_path / "root"), cache_dir=str(tmp_path / "cache"), num_workers=0),
        eval=EvalConfig(batch_size=4, ks=[1], modalities=["image", "dna"], fused_pairs=True),
    )
    model = tiny_model(taxonomy_text(meta, cfg.model.text.template, cfg.model.text.missing_word).tolist())
    with pytest.warns(UserWarning, match=r"role val_unseen \(splits \['val_unseen'\]\) has no rows"):
        evaluator = RetrievalEvaluator(cfg, "val", state=PartialState())
        evaluator.run(model, tmp_path / "out")
    results = evaluator.document
    assert results["meta"]["empty_roles"] == {"val_unseen": ["val_unseen"]}
    assert list(results["dna->dna"]) == ["seen"]  # no unseen column, no harmonic mean
    assert "image_dna_concat->image_dna_concat" in results
    assert "No rows, left out: val_unseen (splits ['val_unseen'])" in (tmp_path / "out" / "results.md").read_text()
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["meta"]["empty_roles"] == {"val_unseen": ["val_unseen"]}

    cfg.data.splits.val_seen = ["nowhere"]
    cfg.data.splits.unused = ["other_heldout", "val"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"nothing to evaluate on val: no rows in roles .*'nowhere'"):
            RetrievalEvaluator(cfg, "val", state=PartialState())
