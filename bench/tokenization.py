"""DNA tokenisation: the vectorised KmerTokenizer vs a tight per-sequence Python tokeniser."""

from __future__ import annotations

import itertools

import pandas as pd

from bench.common import SHARED_DATA, Result, best_time
from clibd.data.dna_tokenizer import KmerTokenizer


def kmer_table(k: int) -> dict[str, int]:
    return {"".join(p): i + 2 for i, p in enumerate(itertools.product("ACGT", repeat=k))}


def python_tokenizer(
    sequences: list[str], k: int, max_nucleotides: int = 660, table: dict[str, int] | None = None
) -> list[list[int]]:
    """The baseline: clean with str methods, then one dict look-up per k-mer."""
    table = table or kmer_table(k)
    out = []
    for seq in sequences:
        s = seq.upper().replace("-", "").rstrip("N")[:max_nucleotides].ljust(max_nucleotides, "N")
        out.append([table.get(s[i : i + k], 1) for i in range(0, max_nucleotides - k + 1, k)])
    return out


def real_barcodes(n: int) -> list[str]:
    seqs = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t")["nucleotides"].tolist()
    return (seqs * (n // len(seqs) + 1))[:n]


def run(device: str, quick: bool) -> list[Result]:
    n = 20_000 if quick else 100_000
    seqs = real_barcodes(n)
    results = []
    for k in (4, 5, 8):
        tok = KmerTokenizer(k=k)
        ours = best_time(lambda t=tok: t(seqs), repeat=3)
        base = best_time(lambda k=k: python_tokenizer(seqs, k), repeat=1)
        results.append(
            Result.timed(
                f"DNA tokenisation k={k}",
                f"{n:,} real barcodes (BOLD, repeated), 660 nt",
                n,
                ours,
                base,
                "barcodes/s",
                goal=5.0,
                note=f"{ours / n * 1e6:.1f} us/barcode vs {base / n * 1e6:.1f} us",
            )
        )
    return results
