"""``python eval.py --embeddings FILE.hdf5``: the original CLIBD's released embeddings layout
(scripts/inference_and_eval.py of bioscan-ml/clibd), written here at tiny size, scored with our
protocol; top-1 checked against a brute-force cosine oracle."""

import json
import re

import h5py
import numpy as np
import pytest

from clibd.cli import main

RANKS = ("order", "family", "genus", "species")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _records(species: np.ndarray) -> list[dict]:
    return [{"order": "Diptera", "family": f"F{s % 2}", "genus": f"G{s % 3}", "species": f"S{s}"} for s in species]


def _split(rng: np.random.Generator, species: np.ndarray, centres: np.ndarray, noise: float) -> dict:
    image = _unit(centres[species] + noise * rng.normal(size=(len(species), centres.shape[1])))
    dna = _unit(centres[species] + noise * rng.normal(size=(len(species), centres.shape[1])))
    text = _unit(centres[species] + 0.05 * rng.normal(size=(len(species), centres.shape[1])))
    return {
        "encoded_image_feature": image,
        "encoded_dna_feature": dna,
        "encoded_language_feature": text,
        "averaged_feature": (image + dna) / 2,
        "concatenated_feature": np.concatenate([image, dna], axis=1),
    }


@pytest.fixture
def published(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8))
    species = {"seen": rng.integers(0, 4, 30), "unseen": rng.integers(4, 6, 20), "key": rng.integers(0, 6, 40)}
    splits = {name: _split(rng, s, centres, noise=0.9) for name, s in species.items()}
    keys = splits["key"]
    keys["all_key_features"] = np.concatenate(
        [keys["encoded_image_feature"], keys["encoded_dna_feature"], keys["encoded_language_feature"]]
    )
    folder = tmp_path / "extracted_embedding" / "bioscan_1m" / "image_dna_text_4gpu"
    folder.mkdir(parents=True)
    with h5py.File(folder / "extracted_feature_from_test_split.hdf5", "w") as handle:
        for name, features in splits.items():
            group = handle.create_group(name)
            for feature, values in features.items():
                group.create_dataset(feature, data=values)
    labels = {f"{name}_gt_dict": _records(s) for name, s in species.items()}
    (folder / "labels_test.json").write_text(json.dumps(labels))
    return folder, splits, species


def _oracle_top1(queries: np.ndarray, keys: np.ndarray, q_species: np.ndarray, k_species: np.ndarray) -> float:
    nearest = np.argmax(_unit(queries) @ _unit(keys).T, axis=1)
    return float(np.mean(k_species[nearest] == q_species))


def test_published_embeddings_give_our_table(published, capsys) -> None:
    folder, splits, species = published
    assert main(["eval", "--embeddings", str(folder / "extracted_feature_from_test_split.hdf5")]) == 0
    printed = capsys.readouterr().out
    assert "| image->dna |" in printed and "| image_dna_concat->image_dna_concat |" in printed
    results = json.loads((folder / "eval-published" / "results.json").read_text())
    assert "image_dna_concat->image" not in results and "image->image_dna_concat" not in results
    assert results["meta"]["counts"]["keys"]["all"] == 120
    for pair, (q_name, k_name) in {
        "image->dna": ("encoded_image_feature", "encoded_dna_feature"),
        "dna->dna": ("encoded_dna_feature", "encoded_dna_feature"),
        "image_dna_mean->image_dna_mean": ("averaged_feature", "averaged_feature"),
        "image_dna_concat->image_dna_concat": ("concatenated_feature", "concatenated_feature"),
    }.items():
        for role in ("seen", "unseen"):
            expected = _oracle_top1(splits[role][q_name], splits["key"][k_name], species[role], species["key"])
            assert 0.1 < expected < 0.95, (pair, role)  # neither trivially right nor wrong
            assert results[pair][role]["micro"]["species"]["top1"] == pytest.approx(expected, abs=1e-12), (pair, role)
    all_keys = np.concatenate([species["key"]] * 3)
    expected = _oracle_top1(
        splits["seen"]["encoded_image_feature"], splits["key"]["all_key_features"], species["seen"], all_keys
    )
    assert results["image->all"]["seen"]["micro"]["species"]["top1"] == pytest.approx(expected, abs=1e-12)


def test_missing_labels_and_wrong_row_counts_are_named(published, tmp_path, capsys) -> None:
    folder, _, _ = published
    hdf5 = folder / "extracted_feature_from_test_split.hdf5"
    labels = json.loads((folder / "labels_test.json").read_text())
    labels["key_gt_dict"] = labels["key_gt_dict"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(labels))
    assert (
        main(["eval", "--embeddings", str(hdf5), "--labels", str(tmp_path / "short.json"), "--out", str(tmp_path)]) == 1
    )
    assert re.search(
        r"key/encoded_image_feature has shape \(40, 8\), but .*short.json gives 39", capsys.readouterr().err
    )
    (folder / "labels_test.json").unlink()
    assert main(["eval", "--embeddings", str(hdf5), "--out", str(tmp_path)]) == 1  # one line each (clibd.cli)
    assert "labels_test.json" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="exactly one of --checkpoint DIR or --embeddings"):
        main(["eval", "--out", str(tmp_path)])
