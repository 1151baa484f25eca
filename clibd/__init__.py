"""clibd: align insect photos, DNA barcodes and taxonomy text in one embedding space."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so `import clibd` does not pull in torch.
_EXPORTS = {
    "KmerTokenizer": "clibd.data.dna_tokenizer",
    "load_config": "clibd.config",
    "Config": "clibd.config",
    "CLIBDModel": "clibd.models.clibd_model",
    "ReferenceIndex": "clibd.index.faiss_index",
    "Embedder": "clibd.embed.embedder",
    "read_specimens": "clibd.data.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clibd' has no attribute {name!r}")
