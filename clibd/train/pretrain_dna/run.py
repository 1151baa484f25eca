"""``clibd pretrain-dna``: read the barcodes, keep the pretraining splits, de-duplicate, and fit
the DNA tower without labels by ``pretrain.objective`` (masked tokens, or the k-mer table in
closed form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clibd.config import Config, save_config
from clibd.data.sources import read_specimens
from clibd.train.pretrain_dna.barcodes import unique_barcodes
from clibd.train.pretrain_dna.mlm import pretrain_on_barcodes
from clibd.train.pretrain_dna.spectral import fit_spectral


def pretrain_dna(cfg: Config) -> dict[str, Any]:
    """Read ``cfg.data``, keep ``cfg.pretrain.splits``, de-duplicate and pretrain."""
    table, skips = read_specimens(cfg.data, require_image=False)  # DNA only: images are not needed
    print(f"pretrain-dna: {skips.summary()}")
    if cfg.pretrain.splits:
        present = sorted(table["split"].dropna().unique())
        unknown = sorted(set(cfg.pretrain.splits) - set(present))
        if unknown:
            raise ValueError(
                f"pretrain.splits names {unknown}, absent from the data (splits: {present}); [] = every row"
            )
        table = table[table["split"].isin(cfg.pretrain.splits)]
    barcodes, report = unique_barcodes(table["dna_barcode"], cfg.model.dna.k)
    print(f"pretrain-dna: {report}")
    out_dir = Path(cfg.pretrain.out_dir)
    save_config(cfg, out_dir / "config.yaml")
    if cfg.pretrain.objective == "kmer_spectral":
        summary = fit_spectral(barcodes, cfg.model.dna, cfg.pretrain, out_dir, report)
        print(f"pretrain-dna: k-mer table of rank {summary['rank']} fitted on {len(barcodes)} barcodes")
        return summary
    return pretrain_on_barcodes(barcodes, cfg.model.dna, cfg.pretrain, out_dir, cfg.data.cache_dir, report)
