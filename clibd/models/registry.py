"""The tower registry: which module builds each part of a model, imported when that part is built.

This is the one place in clibd, below ``commands/``, that imports a module by name at run time
instead of at the top of a file. Why: each tower's libraries cost seconds to import on two cores
and only that tower needs them. timm and open_clip (image) import torchvision, whose detection
ops import torch._dynamo; transformers (BERT DNA and text towers) imports torch._dynamo and
torchvision itself; peft (LoRA) imports transformers. ``clibd classify`` of one barcode spent
7.4 of its 8.2 s in imports before this (issue 26, bench/startup.py). So each part lives in a
module that imports its libraries at its top, and ``CLIBDModel`` builds its towers through
:func:`build_tower`. A model, or the towers of it a command needs
(``CLIBDModel.from_pretrained(dir, modalities=("dna",))``), loads only their libraries. A saved
k-mer-bag DNA tower (``pooling: kmer_bag``, ``num_layers: 0``, the recipe of docs/dna_recipe.md)
needs torch alone: :class:`clibd.models.kmer_bag.KmerBagTower`.

Third-party imports deferred elsewhere, each inside the one function of the path that needs it:
torchvision in ``clibd.data.transforms`` (the data layer sits below this one; decoding needs only
PIL, torchvision is imported when the first image view is built), h5py in ``clibd.data.images``
(HDF5 image references), torch's compiler in ``clibd.embed.encoder`` (``compile`` only).
tests/test_architecture.py checks that no other module imports by name and that every module
named here sits in models/ or below; tests/test_startup.py checks that a barcode-only ``clibd
classify`` or ``clibd embed`` imports none of torchvision, timm, open_clip, transformers, peft or
torch._dynamo.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Optional

from torch import nn

from clibd.config import ModelConfig
from clibd.models.kmer_bag import is_bag_only

# Each part: "module:attribute". Tower classes take (tower config, saved arch or None, ...).
PARTS: dict[str, str] = {
    "image": "clibd.models.image:ImageTower",  # timm
    "open_clip": "clibd.models.open_clip_visual:build_visual",  # open_clip (image.backbone: open_clip)
    "dna": "clibd.models.dna:DnaTower",  # transformers' BertModel over k-mers
    "kmer_bag": "clibd.models.kmer_bag:KmerBagTower",  # a saved bag-only DNA tower: torch alone
    "text": "clibd.models.text:TextTower",  # transformers
    "lora": "clibd.models.lora:inject_lora",  # peft
}


def load_part(name: str) -> Any:
    """The attribute ``PARTS[name]`` names, its module imported on first use."""
    module, attribute = PARTS[name].split(":")
    return getattr(import_module(module), attribute)


def build_tower(modality: str, cfg: ModelConfig, arch: Optional[dict], text_tokenizer: Any = None) -> nn.Module:
    """``modality``'s tower of ``cfg``: rebuilt with random init from the ``arch`` a saved model
    records (its weights are loaded after), or built as configured (``None``). ``text_tokenizer``:
    see :class:`clibd.models.text.TextTower`."""
    tower_cfg = getattr(cfg, modality)
    if modality == "image":
        return load_part("image")(tower_cfg, arch)
    if modality == "dna":
        kind = "kmer_bag" if is_bag_only(tower_cfg, arch) else "dna"
        return load_part(kind)(tower_cfg, arch, embed_dim=cfg.embed_dim)
    if modality == "text":
        return load_part("text")(tower_cfg, text_tokenizer, arch)
    raise ValueError(f"unknown modality {modality!r}")
