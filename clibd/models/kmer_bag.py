"""What every DNA tower shares (its k-mer tokenizer, its head, the k-mer bag), and the tower a saved
bag-only model is rebuilt as, with torch alone.

The bag (``pooling: kmer_bag``, docs/dna_recipe.md) is the mean of the word-embedding rows of a
sequence's ACGT k-mers. With ``num_layers: 0`` it is the whole tower: the transformer never runs,
and its word table is all the tower computes with. :class:`KmerBagTower` rebuilds such a tower
from a saved model without importing transformers, whose import costs seconds and brings
torch._dynamo and torchvision with it (``clibd.models.registry``): a barcode-only ``clibd
classify`` on the recipe's model starts about as fast as ``import torch``. It holds the saved
BERT embedding tensors under transformers' own parameter names, so the same ``model.safetensors``
loads into it and into :class:`clibd.models.dna.DnaTower` alike, and saves back unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clibd.config import DnaTowerConfig
from clibd.data.dna_tokenizer import KmerTokenizer


def make_kmer_tokenizer(cfg: DnaTowerConfig) -> KmerTokenizer:
    return KmerTokenizer(
        k=cfg.k,
        vocab=cfg.vocab,
        max_nucleotides=cfg.max_nucleotides,
        stride=cfg.stride,
        prefix_id=cfg.prefix_token_id,
        patterns=cfg.kmer_patterns or None,
        reading_frame=cfg.reading_frame,
    )


def is_bag_only(cfg: DnaTowerConfig, arch: Optional[dict]) -> bool:
    """A saved DNA tower that is the k-mer bag alone (no transformer layer runs)."""
    return arch is not None and cfg.pooling == "kmer_bag" and arch["bert"]["num_hidden_layers"] == 0


class KmerTower(nn.Module):
    """The parts of a DNA tower that do not depend on its backbone: the k-mer tokenizer, the head
    flags and the bag. Subclasses set ``backbone`` (holding ``embeddings.word_embeddings``),
    ``output_dim`` and ``arch``."""

    default_lora_targets = ["query", "value"]

    def __init__(self, cfg: DnaTowerConfig) -> None:
        super().__init__()
        self.tokenizer = make_kmer_tokenizer(cfg)
        self.pooling, self.use_attention_mask, self.head = cfg.pooling, cfg.attention_mask, cfg.head

    @property
    def ends_in_embedding_space(self) -> bool:
        """The tower's output is the embedding already: no projection head after it."""
        return self.head in ("mlm_softmax", "identity")

    @property
    def has_mlm_softmax_head(self) -> bool:
        """The forward pass runs the original's MLM softmax head over the last hidden state."""
        return self.head == "mlm_softmax"

    def _kmer_bag(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean word embedding of the real ACGT k-mers (special and UNK tokens left out), ``[B, H]``."""
        table = self.backbone.embeddings.word_embeddings.weight
        weights = (mask.bool() & (ids >= self.tokenizer.kmer_offset)).to(table.dtype)
        total = F.embedding_bag(ids, table, mode="sum", per_sample_weights=weights)
        return total / weights.sum(dim=1, keepdim=True).clamp(min=1)


class BertEmbeddingTensors(nn.Module):
    """The tensors of a BERT with no transformer layers, under transformers' names
    (``embeddings.word_embeddings.weight``, ...), from its saved config dict. Only the word table
    is computed with; the others are kept so the saved weights load and save back whole."""

    def __init__(self, bert: dict[str, Any]) -> None:
        super().__init__()
        hidden = bert["hidden_size"]
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(bert["vocab_size"], hidden, padding_idx=bert.get("pad_token_id"))
        self.embeddings.position_embeddings = nn.Embedding(bert["max_position_embeddings"], hidden)
        self.embeddings.token_type_embeddings = nn.Embedding(bert["type_vocab_size"], hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=bert["layer_norm_eps"])


class KmerBagTower(KmerTower):
    """A saved ``pooling: kmer_bag``, ``num_layers: 0`` DNA tower: ``forward(ids [B,L], mask [B,L])
    -> [B, hidden]``, the bag, as :class:`clibd.models.dna.DnaTower` computes it."""

    def __init__(self, cfg: DnaTowerConfig, arch: dict, embed_dim: Optional[int] = None) -> None:
        """``embed_dim`` is not used: a bag-only tower has no MLM softmax head (``check_dna_tower``)."""
        super().__init__(cfg)
        self.backbone = BertEmbeddingTensors(arch["bert"])
        self.output_dim = int(arch["bert"]["hidden_size"])
        self.arch = arch

    def enable_gradient_checkpointing(self) -> None:
        """Nothing to checkpoint: the bag keeps no per-layer activations."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._kmer_bag(ids, mask)
