"""Weights with flipped bits are never used in silence.

Single bits are flipped in a real saved model's ``model.safetensors``, in its JSON header and
in its tensor data (random bits, and the top exponent bit that turned -0.084 into -2.9e37 in
the issue). With the manifest ``save_pretrained`` writes, loading refuses every flip, naming
the file. Without it (a model saved by an older clibd), a flip either fails to load with an
error naming the file, or each embedding is a unit vector or its row says ``not_finite``:
never a zero (or other non-unit) vector taken as an answer. Figures are printed."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clibd.atomic import MANIFEST, OutputError
from clibd.config import QualityConfig
from clibd.embed.embedder import Embedder
from clibd.embed.inputs import NOT_FINITE, embed_barcode_records
from clibd.models.clibd_model import CLIBDModel
from tests.data_paths import BOLD_4K, needs_shared_data
from tests.helpers.fuzz import FUZZ_EXAMPLES

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900), needs_shared_data]

# Flips per kind (header, data bit, top exponent bit): 20 in the ordinary suite, a third of
# CLIBD_FUZZ_EXAMPLES in the soak group (make soak: 333 each).
FLIPS = 20 if FUZZ_EXAMPLES <= 300 else FUZZ_EXAMPLES // 3
DNA_WEIGHTS = ("towers.dna.", "heads.dna.")  # the data flips hit what embedding a barcode reads


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from tests.helpers.real_table import real_run

    return real_run(tmp_path_factory.mktemp("bitflips"))


@pytest.fixture(scope="module")
def barcodes() -> pd.DataFrame:
    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[:10]
    return pd.DataFrame(
        {"id": bold["processid"], "file": "new.fasta", "record": range(1, 11), "sequence": bold["nucleotides"]}
    )


def _layout(weights: Path) -> tuple[int, dict]:
    """(start of the tensor data, the header: name -> dtype, shape, data_offsets)."""
    raw = weights.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    return 8 + length, json.loads(raw[8 : 8 + length])


def _flips(weights: Path, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """(kind, byte, bit): header bits; any bit of a DNA float32 weight; the top exponent bit of one."""
    start, header = _layout(weights)
    floats = [
        (start + meta["data_offsets"][0], start + meta["data_offsets"][1])
        for name, meta in header.items()
        if name.startswith(DNA_WEIGHTS) and meta["dtype"] == "F32" and meta["data_offsets"][1] > meta["data_offsets"][0]
    ]
    spans = np.array([b - a for a, b in floats])
    out = [("header", int(rng.integers(8, start)), int(rng.integers(0, 8))) for _ in range(FLIPS)]
    for kind in ("data", "exponent"):
        for _ in range(FLIPS):
            a, b = floats[int(rng.choice(len(floats), p=spans / spans.sum()))]
            value = a + 4 * int(rng.integers(0, (b - a) // 4))  # a float32, little-endian
            byte, bit = (
                (value + 3, 6) if kind == "exponent" else (value + int(rng.integers(0, 4)), int(rng.integers(0, 8)))
            )
            out.append((kind, byte, bit))
    return out


def _flip(path: Path, byte: int, bit: int) -> None:
    with path.open("r+b") as f:
        f.seek(byte)
        value = f.read(1)[0]
        f.seek(byte)
        f.write(bytes([value ^ (1 << bit)]))


def test_the_manifest_refuses_every_flipped_bit_naming_the_weights(saved, tmp_path) -> None:
    rng = np.random.default_rng(int(os.environ.get("CLIBD_FAULT_SEED", "0")))
    copy = Path(shutil.copytree(saved, tmp_path / "model"))
    weights = copy / "model.safetensors"
    pristine = weights.read_bytes()
    flips = _flips(weights, rng)
    refused = 0
    for _, byte, bit in flips:
        _flip(weights, byte, bit)
        with pytest.raises(OutputError, match=rf"{weights}: cannot be read: it is not the file the saved model"):
            CLIBDModel.from_pretrained(copy)
        refused += 1
        weights.write_bytes(pristine)
    CLIBDModel.from_pretrained(copy)  # the pristine file loads
    print(f"manifest: {len(flips)} single-bit flips (header, data, exponent), {refused} refused, 0 loaded")
    assert refused == len(flips) == 3 * FLIPS


def test_without_a_manifest_a_flipped_bit_fails_by_name_or_marks_its_rows_never_zeros(
    saved, barcodes, tmp_path
) -> None:
    rng = np.random.default_rng(int(os.environ.get("CLIBD_FAULT_SEED", "0")) + 1)
    copy = Path(shutil.copytree(saved, tmp_path / "model"))
    (copy / MANIFEST).unlink()  # as an older clibd saved it: only the second line of defence
    weights = copy / "model.safetensors"
    pristine = weights.read_bytes()
    tally = {"load refused": 0, "rows not_finite": 0, "unit rows": 0, "silent non-unit rows": 0}
    kinds: dict[str, dict[str, int]] = {}
    for kind, byte, bit in _flips(weights, rng):
        outcome = kinds.setdefault(kind, {"refused": 0, "not_finite rows": 0})
        _flip(weights, byte, bit)
        try:
            with pytest.warns(UserWarning, match="no manifest.json"):
                model = CLIBDModel.from_pretrained(copy)
        except (ValueError, OSError) as err:  # never a crash of another kind
            assert str(weights) in str(err) or str(copy) in str(err), err
            tally["load refused"] += 1
            outcome["refused"] += 1
            weights.write_bytes(pristine)
            continue
        inputs = embed_barcode_records(Embedder(model, device="cpu"), barcodes, QualityConfig())
        quality = inputs.records["quality"].to_numpy(str)
        used = quality == ""
        norms = np.linalg.norm(inputs.embeddings[used].astype(np.float64), axis=1)
        tally["unit rows"] += int((np.abs(norms - 1) < 0.05).sum())
        tally["silent non-unit rows"] += int((~(np.abs(norms - 1) < 0.05)).sum())
        tally["rows not_finite"] += int((quality == NOT_FINITE).sum())
        outcome["not_finite rows"] += int((quality == NOT_FINITE).sum())
        assert set(quality) <= {"", NOT_FINITE}  # real barcodes pass their checks: only the model can fail them
        assert np.isnan(inputs.embeddings[quality == NOT_FINITE]).all()  # NaN, never a zero vector
        weights.write_bytes(pristine)
    print(f"no manifest: {3 * FLIPS} single-bit flips x 10 barcodes: {tally}; by kind {kinds}")
    assert tally["silent non-unit rows"] == 0


def test_the_issue_flip_gives_not_finite_rows_not_zeros(saved, barcodes, tmp_path) -> None:
    """-0.084 -> -2.9e37 in the DNA tower: refused with the manifest; without it, rows say not_finite."""
    copy = Path(shutil.copytree(saved, tmp_path / "model"))
    weights = copy / "model.safetensors"
    start, header = _layout(weights)
    name = next(n for n in header if n.startswith("towers.dna") and "word_embeddings" in n)
    encoding = CLIBDModel.from_pretrained(copy).dna_tokenizer(barcodes["sequence"].tolist())
    seen = encoding.ids[encoding.attention_mask == 1]
    token = int(np.bincount(seen).argmax())  # the k-mer the barcodes hold most often
    holds = ((encoding.ids == token) & (encoding.attention_mask == 1)).any(axis=1)
    value = start + header[name]["data_offsets"][0] + 4 * token * header[name]["shape"][1]  # its first weight
    _flip(weights, value + 3, 6)
    with pytest.raises(OutputError, match="model.safetensors: cannot be read"):
        CLIBDModel.from_pretrained(copy)
    (copy / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        damaged = CLIBDModel.from_pretrained(copy)
    changed = damaged.towers["dna"].state_dict()
    assert np.abs(np.concatenate([v.numpy().ravel() for v in changed.values() if v.is_floating_point()])).max() > 1e30
    inputs = embed_barcode_records(Embedder(damaged, device="cpu"), barcodes, QualityConfig())
    quality = inputs.records["quality"].to_numpy(str)
    assert holds.sum() >= 5 and (quality == np.where(holds, NOT_FINITE, "")).all()
    assert np.isnan(inputs.embeddings[holds]).all()  # the barcodes holding that k-mer: NaN rows, never zeros
    norms = np.linalg.norm(inputs.embeddings[~holds], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)  # the others are untouched
