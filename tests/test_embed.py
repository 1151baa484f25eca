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
from torch import nn
from torch.utils.data import Dataset

from clibd.embed import cached_embeddings, embed_dataset, shard

N, L, DIM = 11, 7, 5  # 11 rows over 2 processes: shards of 5 and 6 (padded gather)


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
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.ids = torch.randint(0, 20, (N, L), generator=g)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"dna_ids": self.ids[i], "dna_mask": (self.ids[i] > 2).long(), "index": torch.tensor(i)}


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
    emb = embed_dataset(CountingDna(), Rows(), "dna", batch_size=2, accelerator=accelerator, progress=False)
    np.save(Path(out) / f"rank{rank}.npy", emb)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_embedding_equals_one_process(tmp_path: Path) -> None:
    single = embed_dataset(CountingDna(), Rows(), "dna", batch_size=3, progress=False)
    assert single.shape == (N, DIM)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), single, rtol=1e-6, atol=1e-6)


def test_cache_hit_does_not_call_the_model(tmp_path: Path) -> None:
    model, data = CountingDna(), Rows()
    key = {"checkpoint": "abc", "table": "def", "role": "keys", "modality": "dna"}
    compute = lambda: embed_dataset(model, data, "dna", batch_size=4, progress=False)  # noqa: E731
    first = cached_embeddings(tmp_path, key, compute)
    assert model.calls == 3
    second = cached_embeddings(tmp_path, key, compute)
    assert model.calls == 3
    np.testing.assert_array_equal(first, second)
    cached_embeddings(tmp_path, {**key, "role": "test_seen"}, compute)
    assert model.calls == 6  # another role is another entry
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2
