"""BIOSCAN-5M metadata: clibd's reader vs the bioscan-dataset package's reader of the same CSV.

Both parse the 23 columns with their dtypes and derive each image path from split, chunk
and processid; ours also normalises text to ``<NA>`` and checks the chunk rule. The CSV is
synthetic in the shipped layout (real BOLD barcodes, chunk column filled, 90 % pretrain).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import SHARED_DATA, Result, best_time
from clibd.data.sources.bioscan5m import COLUMNS, METADATA_FILE, read_bioscan5m

CHUNK_CHARS = {"pretrain": 2, "train": 1}


def write_metadata(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    bold = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t")
    pick = rng.integers(0, len(bold), n)
    split = rng.choice(["pretrain", "train", "val", "test", "key_unseen"], n, p=[0.9, 0.06, 0.02, 0.01, 0.01])
    pid = [f"BENCH{i}-24" for i in range(n)]
    meta = pd.DataFrame({c: "" for c in COLUMNS}, index=range(n))
    meta["processid"], meta["split"] = pid, split
    for rank in ("phylum", "class", "order", "family", "genus", "species"):
        meta[rank] = bold[f"{rank}_name"].to_numpy()[pick]
    meta.loc[split == "pretrain", "species"] = ""
    meta["dna_barcode"], meta["dna_bin"] = bold["nucleotides"].to_numpy()[pick], bold["bin_uri"].to_numpy()[pick]
    meta["coord-lat"], meta["inferred_ranks"] = 43.5, 1
    meta["chunk"] = [hashlib.md5(p.encode()).hexdigest()[: CHUNK_CHARS.get(s, 0)] for p, s in zip(pid, split)]
    path = root / "bioscan5m" / METADATA_FILE
    path.parent.mkdir(parents=True)
    meta.to_csv(path, index=False)
    return path


def run(device: str, quick: bool) -> list[Result]:
    from bioscan_dataset import load_bioscan5m_metadata

    n = 30_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_metadata(Path(tmp), n)
        ours = best_time(lambda: read_bioscan5m(tmp, check_images=False), repeat=3)
        base = best_time(lambda: load_bioscan5m_metadata(csv, max_nucleotides=None), repeat=3)
    return [
        Result.timed(
            "BIOSCAN-5M metadata read",
            f"{n:,} rows, 23 columns (shipped CSV layout)",
            n,
            ours,
            base,
            "rows/s",
            goal=1.0,
            note=f"vs bioscan-dataset load_bioscan5m_metadata; 5.15 M rows ~ {5.15e6 / (n / ours):.0f} s",
        )
    ]
