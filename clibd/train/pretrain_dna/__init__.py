"""BarcodeBERT-style masked-token pretraining of the DNA tower (``clibd pretrain-dna``)."""

from clibd.train.pretrain_dna.barcodes import DedupReport, OffsetEncodings, unique_barcodes
from clibd.train.pretrain_dna.masking import mask_tokens
from clibd.train.pretrain_dna.mlm import build_mlm, pretrain_dna, pretrain_on_barcodes

__all__ = [
    "DedupReport",
    "OffsetEncodings",
    "build_mlm",
    "mask_tokens",
    "pretrain_dna",
    "pretrain_on_barcodes",
    "unique_barcodes",
]
