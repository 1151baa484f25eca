"""SpecimenDataset batches, bad-image policy and the DataLoader set-up."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from clibd.config import AugmentConfig, DataConfig, TextTowerConfig
from clibd.data.dataset import (
    REASON_CORRUPT,
    REASON_UNREADABLE,
    RecordError,
    SpecimenDataset,
    build_dataloader,
)
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.data.specimens import REASON_DNA, REASON_IMAGE
from clibd.data.text import encode_taxonomy
from clibd.data.transforms import build_transform, decode_image
from clibd.taxonomy import label_codes, taxonomy_text
from tests.helpers.image_faults import bomb_jpeg, noise_jpeg, truncated_jpeg

IMAGE_SIZE = 16
LONG_SPECIES = "Pseudohexaplasiomyia longissima"
# (order, family, genus, species)
TAXA = [
    ("Diptera", "Sciaridae", "Bradysia", "Bradysia praecox"),
    ("Diptera", "Sciaridae", "Bradysia", None),
    ("Diptera", "Cecidomyiidae", None, None),
    ("Hymenoptera", "Braconidae", "Apanteles", "Apanteles aidalopezae"),
    ("Hymenoptera", None, None, None),
    ("Diptera", "Muscidae", "Pseudohexaplasiomyia", LONG_SPECIES),
]


def make_table(tmp_path: Path, n: int = 12) -> pd.DataFrame:
    rows = []
    for i in range(n):
        order, family, genus, species = TAXA[i % len(TAXA)]
        path = tmp_path / f"P{i}.jpg"
        path.write_bytes(noise_jpeg(24 + i, 20, seed=i))
        rows.append(
            {"processid": f"P{i}", "split": "train", "phylum": "Arthropoda", "class": "Insecta",
             "order": order, "family": family, "subfamily": None, "genus": genus, "species": species,
             "dna_bin": None, "dna_barcode": "ACGT" * (3 + i) + "NN", "image_ref": str(path)}
        )  # fmt: skip
    return pd.DataFrame(rows).astype("string")


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    return make_table(tmp_path)


def data_cfg(tmp_path: Path, policy: str = "error") -> DataConfig:
    return DataConfig(bad_records=policy, cache_dir=str(tmp_path / "cache"))


def full_dataset(table, tmp_path, text_tokenizer, train=False, policy="error", text_cfg=None):
    return SpecimenDataset(
        table, data_cfg(tmp_path, policy), IMAGE_SIZE, KmerTokenizer(k=4, max_nucleotides=48),
        text_tokenizer, text_cfg or TextTowerConfig(), train=train,
    )  # fmt: skip


def test_batch_has_exactly_the_contract_keys_shapes_and_dtypes(table, tmp_path, text_tokenizer):
    ds = full_dataset(table, tmp_path, text_tokenizer)
    batch = ds.__getitems__([0, 3, 5])
    assert set(batch) == {"image", "dna_ids", "dna_mask", "text_ids", "text_mask", "labels", "index"}
    assert batch["image"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and batch["image"].dtype == torch.float32
    assert batch["dna_ids"].shape == batch["dna_mask"].shape == (3, 12)
    assert batch["text_ids"].shape == batch["text_mask"].shape == (3, ds.text.max_length)
    assert batch["labels"].shape == (3, 4)
    assert batch["index"].tolist() == [0, 3, 5]
    for key in ("dna_ids", "dna_mask", "text_ids", "text_mask", "labels", "index"):
        assert batch[key].dtype == torch.int64, key


def test_only_the_configured_modalities_are_served(table, tmp_path):
    ds = SpecimenDataset(table, data_cfg(tmp_path))
    assert set(ds.__getitems__([1, 2])) == {"labels", "index"}
    ds = SpecimenDataset(table, data_cfg(tmp_path), image_size=IMAGE_SIZE)
    assert set(ds.__getitems__([1, 2])) == {"image", "labels", "index"}


def test_labels_are_table_codes_with_minus_one_where_unknown(table, tmp_path):
    ds = SpecimenDataset(table, data_cfg(tmp_path))
    labels = ds.__getitems__([1, 2, 4, 0])["labels"].numpy()
    assert (labels == label_codes(table)[[1, 2, 4, 0]]).all()
    assert labels[0].tolist()[3] == -1  # row 1: no species
    assert labels[1].tolist()[2:] == [-1, -1]  # row 2: no genus, species
    assert labels[2].tolist()[1:] == [-1, -1, -1]  # row 4: order only
    assert (labels[3] >= 0).all()


def test_dna_tokens_equal_the_tokenizer_output_with_zero_mask_on_padding(table, tmp_path):
    tok = KmerTokenizer(k=4, max_nucleotides=48)
    ds = SpecimenDataset(table, data_cfg(tmp_path), dna_tokenizer=tok)
    rows = [7, 0, 2]
    batch = ds.__getitems__(rows)
    expected = tok([table["dna_barcode"].iat[r] for r in rows])
    assert (batch["dna_ids"].numpy() == expected.ids).all()
    assert (batch["dna_mask"].numpy() == expected.attention_mask).all()
    # row 0 has 12 nucleotides (+ trailing N, stripped): 3 real 4-mers, then padding
    assert batch["dna_mask"][1].tolist() == [1, 1, 1] + [0] * 9
    assert list((tmp_path / "cache").glob("dna-*.npz")), "DNA tokens are cached per dataset"


def test_text_with_max_length_none_keeps_the_longest_species_whole(table, tmp_path, text_tokenizer):
    ds = full_dataset(table, tmp_path, text_tokenizer)
    assert ds.text.longest == f"Diptera Muscidae Pseudohexaplasiomyia {LONG_SPECIES}"
    full = text_tokenizer(ds.text.longest)["input_ids"]
    assert ds.text.max_length == ds.text.longest_tokens == len(full) and ds.text.n_cut == 0
    row = 5  # the long species
    batch = ds.__getitems__([row])
    ids = batch["text_ids"][0].tolist()
    assert ids == full
    assert ids[-2] == text_tokenizer.convert_tokens_to_ids("longissima")  # last real token before [SEP]
    assert batch["text_mask"][0].tolist() == [1] * len(full)


def test_text_tokens_equal_the_tokenizer_output_for_those_rows(table, tmp_path, text_tokenizer):
    ds = full_dataset(table, tmp_path, text_tokenizer)
    rows = [4, 1, 2, 3]
    batch = ds.__getitems__(rows)
    strings = taxonomy_text(table, TextTowerConfig().template, TextTowerConfig().missing_word).iloc[rows].tolist()
    expected = text_tokenizer(strings, padding="max_length", max_length=ds.text.max_length, return_tensors="np")
    assert (batch["text_ids"].numpy() == expected["input_ids"]).all()
    assert (batch["text_mask"].numpy() == expected["attention_mask"]).all()
    assert "not _ classified" in text_tokenizer.decode(batch["text_ids"][0], skip_special_tokens=True)


def test_text_tokenised_once_per_distinct_string(table, text_tokenizer):
    enc = encode_taxonomy(table, text_tokenizer, "{order} {family}", "not_classified")
    assert len(enc.strings) == 5 and len(enc.inverse) == len(table)
    assert enc.strings[enc.inverse[4]] == "Hymenoptera not_classified"


def test_configured_max_length_that_cuts_warns_with_the_count(table, tmp_path, text_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="clibd.data.text"):
        ds = full_dataset(table, tmp_path, text_tokenizer, text_cfg=TextTowerConfig(max_length=8))
    # tokens with [CLS]/[SEP]: 7, 8, 10 (two "not _ classified"), 7, 12 (three), 13 (the long species)
    assert "text max_length=8 cuts 3 of 6 distinct taxonomy strings" in caplog.text
    batch = ds.__getitems__([5, 0])
    assert batch["text_ids"].shape == (2, 8)
    assert batch["text_ids"][0].tolist() == text_tokenizer(ds.text.longest, truncation=True, max_length=8)["input_ids"]
    assert batch["text_ids"][0, -1] == text_tokenizer.sep_token_id and batch["text_mask"][0].tolist() == [1] * 8
    assert batch["text_mask"][1].tolist() == [1] * 7 + [0]


def test_same_indices_give_identical_eval_batches(table, tmp_path, text_tokenizer):
    ds = full_dataset(table, tmp_path, text_tokenizer)
    a, b = ds.__getitems__([3, 8, 1]), ds.__getitems__([3, 8, 1])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_batch_images_equal_the_per_image_eval_transform(table, tmp_path):
    ds = SpecimenDataset(table, data_cfg(tmp_path), IMAGE_SIZE)
    images = ds.__getitems__([4, 9])["image"]
    for got, row in zip(images, [4, 9]):
        ref = table["image_ref"].iat[row]
        img = decode_image(Path(ref).read_bytes(), ref, min_side=IMAGE_SIZE)
        torch.testing.assert_close(got, build_transform(IMAGE_SIZE)(img))


def test_train_mode_augments_differently_between_epochs(table, tmp_path):
    cfg = data_cfg(tmp_path)
    cfg.augment = AugmentConfig(scale_min=0.5)
    ds = SpecimenDataset(table, cfg, IMAGE_SIZE, train=True)
    a = ds.__getitems__([3, 8])
    ds.set_epoch(1)
    b = ds.__getitems__([3, 8])
    assert not torch.equal(a["image"], b["image"])
    assert torch.equal(a["labels"], b["labels"])


def _corrupt(table: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """Rows 2-5 get each image fault; row 6 loses its image_ref."""
    faults = {2: truncated_jpeg(), 3: b"", 4: bomb_jpeg()}
    table = table.copy()
    for row, data in faults.items():
        path = tmp_path / f"bad{row}.jpg"
        path.write_bytes(data)
        table.loc[row, "image_ref"] = str(path)
    table.loc[5, "image_ref"] = str(tmp_path / "missing.jpg")
    return table


@pytest.mark.parametrize(
    "row, message",
    [(2, r"bad2\.jpg: truncated image file"), (3, r"bad3\.jpg: empty file"), (4, r"bad4\.jpg: 10000x10000"),
     (5, r"missing\.jpg")],
    ids=["truncated", "zero-bytes", "bomb", "missing-file"],
)  # fmt: skip
def test_bad_image_under_error_policy_names_processid_and_ref(table, tmp_path, row, message):
    ds = SpecimenDataset(_corrupt(table, tmp_path), data_cfg(tmp_path), IMAGE_SIZE)
    with pytest.raises(RecordError, match=rf"record P{row} \(row {row}\): .*{message}"):
        ds.__getitems__([0, row])


def test_bad_images_under_skip_policy_are_dropped_logged_and_counted(table, tmp_path, caplog):
    ds = SpecimenDataset(_corrupt(table, tmp_path), data_cfg(tmp_path, "skip"), IMAGE_SIZE)
    with caplog.at_level(logging.WARNING, logger="clibd.data.dataset"):
        batch = ds.__getitems__([0, 1, 2, 3, 4, 5, 6])
    assert batch["index"].tolist() == [0, 1, 6]
    assert batch["image"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and batch["labels"].shape == (3, 4)
    assert "skipping record P2 (row 2)" in caplog.text and "skipping record P5 (row 5)" in caplog.text
    report = ds.skipped
    assert report.counts == {REASON_CORRUPT: 3, REASON_UNREADABLE: 1}
    assert report.examples[REASON_CORRUPT] == ["P2", "P3", "P4"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clibd.data.dataset"):
        again = ds.__getitems__([2, 3, 7])
    assert again["index"].tolist() == [7] and caplog.text == ""  # known bad: not decoded again
    assert ds.skipped.skipped == 4  # distinct records, not events


def test_missing_image_ref_is_refused_up_front(table, tmp_path):
    table = table.copy()
    table.loc[[3, 9], "image_ref"] = pd.NA
    with pytest.raises(RecordError, match=r"record P3 \(row 3\): no image_ref \(2 such records"):
        SpecimenDataset(table, data_cfg(tmp_path), IMAGE_SIZE)
    ds = SpecimenDataset(table, data_cfg(tmp_path, "skip"), IMAGE_SIZE)
    assert ds.skipped.counts == {REASON_IMAGE: 2}
    assert ds.__getitems__([2, 3, 4])["index"].tolist() == [2, 4]
    # without the image tower the same rows are fine
    assert SpecimenDataset(table, data_cfg(tmp_path)).__getitems__([3])["index"].tolist() == [3]


def test_barcode_without_nucleotides_is_refused_up_front(table, tmp_path):
    table = table.copy()
    table.loc[4, "dna_barcode"] = "NNNN--"
    table.loc[7, "dna_barcode"] = pd.NA
    tok = KmerTokenizer(k=4, vocab="barcodebert_v1", max_nucleotides=48)
    with pytest.raises(RecordError, match=r"record P4 \(row 4\): barcode has no nucleotides"):
        SpecimenDataset(table, data_cfg(tmp_path), dna_tokenizer=tok)
    ds = SpecimenDataset(table, data_cfg(tmp_path, "skip"), dna_tokenizer=tok)
    assert ds.skipped.counts == {REASON_DNA: 2}
    batch = ds.__getitems__([3, 4, 7, 8])
    assert batch["index"].tolist() == [3, 8] and batch["dna_ids"][:, 0].tolist() == [tok.cls_id] * 2


def test_unknown_policy_is_rejected(table, tmp_path):
    with pytest.raises(ValueError, match="bad_records must be one of"):
        SpecimenDataset(table, data_cfg(tmp_path, "ignore"))


def _epoch_orders(loader, epochs: int) -> list[list[int]]:
    return [torch.cat([b["index"] for b in loader]).tolist() for _ in range(epochs)]


def test_shuffled_loader_reshuffles_every_epoch_deterministically_for_a_seed(table, tmp_path):
    ds = SpecimenDataset(table, data_cfg(tmp_path))
    orders = _epoch_orders(build_dataloader(ds, 5, shuffle=True, seed=7), 3)
    assert all(sorted(order) == list(range(len(table))) for order in orders)
    assert orders[0] != orders[1] != orders[2]
    assert _epoch_orders(build_dataloader(ds, 5, shuffle=True, seed=7), 3) == orders
    assert _epoch_orders(build_dataloader(ds, 5, shuffle=True, seed=8), 1)[0] != orders[0]
    assert _epoch_orders(build_dataloader(ds, 5, shuffle=False), 1)[0] == list(range(len(table)))
    sizes = [len(b["index"]) for b in build_dataloader(ds, 5, shuffle=True, drop_last=True)]
    assert sizes == [5, 5]


def test_workers_serve_the_same_eval_batches_and_report_skips_to_the_main_process(table, tmp_path):
    ds = SpecimenDataset(_corrupt(table, tmp_path), data_cfg(tmp_path, "skip"), IMAGE_SIZE)
    loader = build_dataloader(ds, 4, shuffle=False, num_workers=2)
    assert loader.persistent_workers and loader.prefetch_factor == 4
    with_workers = list(loader)
    in_process = list(
        build_dataloader(
            SpecimenDataset(_corrupt(table, tmp_path), data_cfg(tmp_path, "skip"), IMAGE_SIZE), 4, shuffle=False
        )
    )
    assert [b["index"].tolist() for b in with_workers] == [[0, 1], [6, 7], [8, 9, 10, 11]]
    for a, b in zip(with_workers, in_process):
        assert torch.equal(a["image"], b["image"])
    assert ds.skipped.counts == {REASON_CORRUPT: 3, REASON_UNREADABLE: 1}


def test_augmentation_of_a_row_depends_on_seed_epoch_and_row_only(table, tmp_path, text_tokenizer):
    """A run resumed mid-epoch builds a fresh dataset and skips the batches already seen: its
    augmented batch must equal the uninterrupted run's, whatever the global RNG did before."""

    def augmented(seed: int = 0) -> SpecimenDataset:
        cfg = DataConfig(cache_dir=str(tmp_path / "cache"), augment=AugmentConfig(scale_min=0.3, hflip=0.5, vflip=0.5))
        return SpecimenDataset(table, cfg, IMAGE_SIZE, train=True, seed=seed)

    uninterrupted = augmented()
    uninterrupted.set_epoch(1)
    uninterrupted.__getitems__([0, 1, 2])  # the batch before the interruption
    expected = uninterrupted.__getitems__([7, 3, 9])["image"]
    resumed = augmented()
    resumed.set_epoch(1)
    torch.manual_seed(123)  # the global stream differs after a resume
    before = torch.get_rng_state()
    assert torch.equal(resumed.__getitems__([7, 3, 9])["image"], expected)
    assert torch.equal(torch.get_rng_state(), before)  # augmentation does not draw from the global stream
    assert torch.equal(resumed.__getitems__([3])["image"][0], expected[1])  # per row, not per batch position
    resumed.set_epoch(2)
    assert not torch.equal(resumed.__getitems__([7, 3, 9])["image"], expected)  # a new epoch, new draws
    other_seed = augmented(seed=1)
    other_seed.set_epoch(1)
    assert not torch.equal(other_seed.__getitems__([7, 3, 9])["image"], expected)
