"""Data pipeline: specimens/s delivered by our loader (SpecimenDataset + build_dataloader:
decode, augment, DNA and text tokens, collate) vs a naive loader, from the demo dataset in
the BIOSCAN-5M layout and from the same specimens in the published CLIBD HDF5 layout.

The naive loader is what a first implementation does: in ``__getitem__``, read one image
(PIL from a file, or a row of the open HDF5 file), decode it in full, augment and normalise
it, tokenise its barcode with a per-k-mer Python loop and its taxonomy string with the HF
tokenizer; then torch's default collate. Both use the same augmentation, batch and workers.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from bench.common import Result
from bench.compute import interleaved
from bench.tokenization import kmer_table, python_tokenizer
from clibd.config import DataConfig, DnaTowerConfig, TextTowerConfig
from clibd.data.dataset import SpecimenDataset, build_dataloader
from clibd.data.demo import generate_demo
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.data.images import H5_SCHEME, parse_h5_ref, read_image_bytes
from clibd.data.roles import select_role
from clibd.data.sources import read_specimens
from clibd.data.sources.hdf5 import BIOSCAN5M_HDF5_ROLES, write_clibd_hdf5
from clibd.data.transforms import build_transform, decode_image
from clibd.models.kmer_bag import make_kmer_tokenizer
from clibd.models.text import build_text_tokenizer
from clibd.taxonomy import taxonomy_text

IMAGE_SIZE = 224
BATCH = 32
WORKERS = 2


class NaiveDataset(Dataset):
    def __init__(
        self, table: pd.DataFrame, cfg: DataConfig, dna: KmerTokenizer, text_tokenizer: Any, text_cfg: TextTowerConfig
    ) -> None:
        self.refs = table["image_ref"].tolist()
        self.barcodes = table["dna_barcode"].astype("string").fillna("").tolist()
        self.texts = taxonomy_text(table, text_cfg.template, text_cfg.missing_word).tolist()
        self.transform = build_transform(IMAGE_SIZE, cfg.mean, cfg.std, cfg.augment)
        self.k, self.max_nucleotides, self.kmers = dna.k, dna.max_nucleotides, kmer_table(dna.k)
        self.text_tokenizer = text_tokenizer
        self.text_length = max(len(ids) for ids in text_tokenizer(self.texts)["input_ids"])
        self.h5: dict[str, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def _image(self, ref: str) -> Image.Image:
        if not ref.startswith(H5_SCHEME):
            return Image.open(ref).convert("RGB")
        path, group, row = parse_h5_ref(ref)
        if path not in self.h5:  # opened lazily, once per worker
            self.h5[path] = h5py.File(path, "r")
        g = self.h5[path][group]
        data = g["image"][row, : int(g["image_mask"][row])].tobytes()
        return Image.open(io.BytesIO(data)).convert("RGB")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        dna = python_tokenizer([self.barcodes[i]], self.k, self.max_nucleotides, self.kmers)[0]
        text = self.text_tokenizer(
            self.texts[i], padding="max_length", max_length=self.text_length, return_tensors="pt"
        )
        return {
            "image": self.transform(self._image(self.refs[i])),
            "dna_ids": torch.tensor(dna),
            "text_ids": text["input_ids"][0],
            "text_mask": text["attention_mask"][0],
            "index": torch.tensor(i),
        }


def _per_specimen_ms(ours: SpecimenDataset, naive: NaiveDataset, n: int = 64) -> dict[str, float]:
    """In this process with one thread, as in a DataLoader worker: ms per specimen of each
    loader's work, of the image work both must do (read, decode, the same augmentation), and
    of the augmentation alone on decoded images (what even a loader that cached decoded
    images in memory would still do on the CPU)."""
    rows, refs = list(range(n)), ours.image_ref[:n]
    decoded = [decode_image(read_image_bytes(r), r) for r in refs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = interleaved(
            {
                "ours": lambda: [ours.__getitems__(rows[i : i + BATCH]) for i in range(0, n, BATCH)],
                "naive": lambda: [default_collate([naive[j] for j in rows[i : i + BATCH]]) for i in range(0, n, BATCH)],
                "image": lambda: [ours.transform(decode_image(read_image_bytes(r), r)) for r in refs],
                "augment": lambda: [ours.transform(image) for image in decoded],
            },
            torch.device("cpu"),
            rounds=3,
        )
    finally:
        torch.set_num_threads(threads)
    return {k: v / n * 1e3 for k, v in seconds.items()}


def _specimens_per_s(loader: DataLoader) -> float:
    start = time.perf_counter()
    n = sum(len(batch["index"]) for batch in loader)
    return n / (time.perf_counter() - start)


def _compare(layout: str, cfg: DataConfig, n_total: int) -> Result:
    table, _ = read_specimens(cfg)
    rows = select_role(table, cfg.splits, "train")
    text_cfg = TextTowerConfig(name=None)
    text_tokenizer = build_text_tokenizer(
        text_cfg, taxonomy_text(rows, text_cfg.template, text_cfg.missing_word).tolist()
    )
    dna = make_kmer_tokenizer(DnaTowerConfig())
    ours_ds = SpecimenDataset(rows, cfg, IMAGE_SIZE, dna, text_tokenizer, text_cfg, train=True)
    naive_ds = NaiveDataset(rows, cfg, dna, text_tokenizer, text_cfg)
    # One epoch each, worker start-up included for both; the best of two passes.
    ours = max(_specimens_per_s(build_dataloader(ours_ds, BATCH, shuffle=True, num_workers=WORKERS)) for _ in range(2))
    naive = max(_specimens_per_s(DataLoader(naive_ds, BATCH, shuffle=True, num_workers=WORKERS)) for _ in range(2))
    ms = _per_specimen_ms(ours_ds, naive_ds)
    return Result(
        benchmark=f"data pipeline ({layout})",
        workload=f"{len(rows):,} train specimens of a {n_total:,}-specimen demo,"
        f" {IMAGE_SIZE}px augmented, batch {BATCH}, {WORKERS} workers",
        ours=ours,
        baseline=naive,
        unit="specimens/s",
        ratio=ours / naive,
        goal=3.0,
        note="baseline: per-sample PIL/HDF5 read + full decode + float transform, Python k-mers, "
        "per-string HF tokenizer, "
        f"default collate; 1 thread in-process: ours {ms['ours']:.2f} ms/specimen, naive {ms['naive']:.2f}, "
        f"read+decode+augment alone {ms['image']:.2f} -> ceiling {ms['naive'] / ms['image']:.2f}x; "
        f"augment alone {ms['augment']:.2f} -> ceiling {ms['naive'] / ms['augment']:.2f}x with decoded images cached",
    )


def run(device: str, quick: bool) -> list[Result]:
    n = 800 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="clibd-bench-") as tmp:
        root = Path(tmp)
        generate_demo(root / "demo", n, seed=0)
        cfg = DataConfig(format="bioscan5m", root=str(root / "demo"), cache_dir=str(root / "cache"))
        results = [_compare("BIOSCAN-5M layout", cfg, n)]
        table, _ = read_specimens(cfg)
        write_clibd_hdf5(table, root / "clibd.h5")
        h5_cfg = DataConfig(
            format="hdf5", root=str(root / "clibd.h5"), cache_dir=str(root / "cache"), splits=BIOSCAN5M_HDF5_ROLES
        )
        results.append(_compare("published HDF5 layout", h5_cfg, n))
    return results
