"""embed_dataset (split across processes, gathered in order), the embedding cache, and Embedder."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from accelerate import PartialState
from torch import nn
from torch.utils.data import Dataset

from clibd.embed.datasets import cached_embeddings, embed_dataset, shard

N, L, DIM = 11, 7, 5  # 11 rows over 2 processes: shards of 5 and 6 (padded gather)
DROPPED = (0, 7)  # rows the dataset refuses to serve: they come back NaN, in place


class CountingDna(nn.Module):
    """Stand-in with the model API embed_dataset uses; counts calls to prove cache hits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.EmbeddingBag(20, DIM, mode="sum")
        self.cfg = SimpleNamespace(embed_dim=DIM)
        self.calls = 0

    def encode_dna(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return F.normalize(self.embed(ids) + mask.sum(1, keepdim=True), dim=-1)


class Rows(Dataset):
    """Serves whole batches like SpecimenDataset; drops ``dropped`` rows as a skipped bad record would be."""

    def __init__(self, dropped: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(3)
        self.ids = torch.randint(0, 20, (N, L), generator=g)
        self.dropped = dropped

    def __len__(self) -> int:
        return N

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        served = torch.tensor([r for r in rows if r not in self.dropped], dtype=torch.long)
        return {"dna_ids": self.ids[served], "dna_mask": (self.ids[served] > 2).long(), "index": served}


def test_shard_covers_rows_once() -> None:
    for n, world in [(11, 2), (3, 4), (0, 3), (100, 7)]:
        rows = [i for r in range(world) for i in shard(n, r, world)]
        assert rows == list(range(n))


def _worker(rank: int, port: int, out: str) -> None:
    from accelerate import Accelerator

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    emb = embed_dataset(CountingDna(), Rows(DROPPED), "dna", batch_size=2, state=accelerator.state, progress=False)
    np.save(Path(out) / f"rank{rank}.npy", emb)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_embedding_equals_one_process(tmp_path: Path) -> None:
    single = embed_dataset(CountingDna(), Rows(DROPPED), "dna", batch_size=3, state=PartialState(), progress=False)
    assert single.shape == (N, DIM)
    assert np.isnan(single).all(axis=1).tolist() == [i in DROPPED for i in range(N)]
    whole = embed_dataset(CountingDna(), Rows(), "dna", batch_size=N, state=PartialState(), progress=False)
    np.testing.assert_allclose(single[1:5], whole[1:5], rtol=1e-6)  # batching does not change rows
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), single, rtol=1e-6, atol=1e-6)


def test_cache_hit_does_not_call_the_model(tmp_path: Path) -> None:
    model, data = CountingDna(), Rows()
    key = {"checkpoint": "abc", "table": "def", "role": "keys", "modality": "dna"}
    compute = lambda: embed_dataset(model, data, "dna", batch_size=4, state=PartialState(), progress=False)  # noqa: E731
    first = cached_embeddings(tmp_path, key, compute, PartialState())
    assert model.calls == 3
    second = cached_embeddings(tmp_path, key, compute, PartialState())
    assert model.calls == 3
    np.testing.assert_array_equal(first, second)
    cached_embeddings(tmp_path, {**key, "role": "test_seen"}, compute, PartialState())
    assert model.calls == 6  # another role is another entry
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2


# ---- Embedder on real photos and barcodes -------------------------------------------------
# The model stack is imported inside the tests: the spawned workers above re-import this module.

from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from clibd.config import Config
    from tests.helpers.tiny_checkpoint import save_run, tiny_model

    cfg = Config()
    cfg.data.mean, cfg.data.std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]
    return save_run(tmp_path_factory.mktemp("run"), tiny_model(), cfg)


def test_embedder_reads_normalisation_from_the_run_config(checkpoint: Path) -> None:
    from clibd.embed.embedder import Embedder
    from clibd.embed.run_dir import checkpoint_hash

    embedder = Embedder(checkpoint, device="cpu")
    white = embedder.normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    np.testing.assert_allclose(
        white[0, :, 0, 0].numpy(), [(1 - 0.5) / 0.2, (1 - 0.4) / 0.2, (1 - 0.3) / 0.2], rtol=1e-6
    )
    assert embedder.checkpoint_hash == checkpoint_hash(checkpoint) and len(embedder.checkpoint_hash) == 16


def test_embedder_prefers_the_normalisation_saved_in_config_json(tmp_path: Path) -> None:
    """config.json (what training normalised with) first, then the run's config.yaml, then the defaults."""
    from clibd.config import Config
    from clibd.embed.embedder import Embedder
    from clibd.models.clibd_model import CLIBDModel
    from tests.helpers.tiny_checkpoint import save_run, tiny_model

    model = tiny_model()
    model.image_normalization = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.25]}
    cfg = Config()
    cfg.data.mean, cfg.data.std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]  # a config.yaml that says otherwise
    checkpoint = save_run(tmp_path, model, cfg)
    assert CLIBDModel.from_pretrained(checkpoint).image_normalization == model.image_normalization
    white = Embedder(checkpoint, device="cpu").normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    np.testing.assert_allclose(white[0, :, 0, 0].numpy(), [0.9 / 0.5, 0.8 / 0.5, 0.7 / 0.25], rtol=1e-6)


@needs_shared_data
def test_embed_real_photos_and_skip_unreadable_by_name(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    from clibd.embed.embedder import Embedder

    photos = sorted(REAL_IMAGES.glob("*.jpg"))[:6]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    embedder = Embedder(checkpoint, device="cpu", batch_size=4)
    with pytest.warns(UserWarning, match="empty.jpg"):
        emb, ids, skipped, quality = embedder.embed_images([photos[0], empty, *photos[1:]])
    assert emb.shape == (6, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert ids == [p.stem for p in photos] and quality == [""] * 6  # no rules given: not checked
    assert [name for name, _ in skipped] == [str(empty)] and "empty" in skipped[0][1]
    # Batch composition does not change a photo's embedding.
    single = Embedder(checkpoint, device="cpu", batch_size=1)
    alone, *_ = single.embed_images([photos[2]])
    np.testing.assert_allclose(alone[0], emb[2], atol=1e-5)
    # An in-memory image (fully decoded; files decode in JPEG draft mode) lands next to its file.
    in_memory, ids, *_ = single.embed_images([Image.open(photos[2])])
    assert ids == ["image-0"] and float(in_memory[0] @ emb[2]) > 0.999


@needs_shared_data
def test_embed_real_barcodes_and_text(checkpoint: Path) -> None:
    from clibd.embed.embedder import Embedder
    from clibd.embed.records import read_barcode_records

    records = read_barcode_records([BOLD_4K])
    assert len(records) == 4278 and records["problem"].isna().all()
    assert records["record"].tolist() == list(range(1, 4279)) and set(records["file"]) == {str(BOLD_4K)}
    ids, seqs = records["id"].tolist(), records["sequence"].tolist()
    embedder = Embedder(checkpoint, device="cpu", batch_size=16)
    emb, out_ids = embedder.embed_dna(seqs[:40], ids[:40])
    assert emb.shape == (40, 16) and out_ids == ids[:40]
    again, _ = embedder.embed_dna(seqs[5:6], ids[5:6])
    np.testing.assert_allclose(again[0], emb[5], atol=1e-5)
    text = embedder.embed_text(["Diptera Sciaridae Bradysia Bradysia_impatiens", "Diptera Sciaridae"])
    assert text.shape == (2, 16) and not np.allclose(text[0], text[1])


@needs_shared_data
def test_embed_command_parquet_and_npy(checkpoint: Path, tmp_path: Path, capsys) -> None:
    import pandas as pd

    from clibd.cli import main

    photos = sorted(REAL_IMAGES.glob("valid_*.jpg"))[:5]
    out = tmp_path / "images.parquet"
    assert main(["embed", "--checkpoint", str(checkpoint), "--images", *map(str, photos), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == ["id", "file", "record", "quality", "embedding"]
    assert table["id"].tolist() == [p.stem for p in photos] and table["file"].tolist() == list(map(str, photos))
    assert (table["quality"] == "").all()
    vectors = np.stack(table["embedding"].to_numpy())
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

    fasta = tmp_path / "new.fasta"
    fasta.write_text(">new1 first\nACGTTGCAACGTTGCAACGT\n>new2\nNNNN\n>new3\nTTGCAACGTAACCGGTTAAC\n")
    out = tmp_path / "dna.npy"
    assert (
        main(["embed", "--checkpoint", str(checkpoint), "--dna", str(fasta), "--out", str(out), "--min-valid-nt", "16"])
        == 0
    )
    assert np.load(out).shape == (2, 16)
    assert (tmp_path / "dna.ids.txt").read_text().split() == ["new1", "new3"]
    assert "left out new2: too_short (0 valid nt < 16)" in capsys.readouterr().err
    # The default minimum (200 valid nt) refuses all three 20-nt records, by name.
    assert main(["embed", "--checkpoint", str(checkpoint), "--dna", str(fasta), "--out", str(out)]) == 0
    assert np.load(out).shape == (0, 16)
    assert "left out new1: too_short (20 valid nt < 200)" in capsys.readouterr().err
