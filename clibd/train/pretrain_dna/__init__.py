"""Pretraining of the DNA tower without labels (``clibd pretrain-dna``): BarcodeBERT-style masked
tokens, or the k-mer table of a bag-of-k-mers tower fitted in closed form."""

from clibd.train.pretrain_dna.barcodes import DedupReport, OffsetEncodings, unique_barcodes
from clibd.train.pretrain_dna.masking import mask_tokens
from clibd.train.pretrain_dna.mlm import build_mlm, pretrain_on_barcodes
from clibd.train.pretrain_dna.run import pretrain_dna
from clibd.train.pretrain_dna.spectral import fit_spectral

__all__ = [
    "DedupReport",
    "OffsetEncodings",
    "build_mlm",
    "fit_spectral",
    "mask_tokens",
    "pretrain_dna",
    "pretrain_on_barcodes",
    "unique_barcodes",
]
