"""DNA tower: a BarcodeBERT-style ``transformers.BertModel`` over k-mer tokens, mean-pooled.

``cfg.pretrained`` (``DnaTowerConfig``) is either a local HF-format directory
(``BertForMaskedLM`` or ``BertModel`` saved with ``save_pretrained``), or a plain state-dict
file of a ``BertForMaskedLM`` (BarcodeBERT's older release format: keys prefixed ``bert.``;
``.pt/.pth/.bin`` read weights-only, or ``.safetensors``). Its vocabulary must be the one
of the configured ``KmerTokenizer`` and its sizes those of the config, else it is refused
with the differing fields named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import BertConfig, BertModel

from clibd.config import DnaTowerConfig
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.models.pooling import masked_mean
from clibd.models.weights import CheckpointMismatchError, load_state_dict, mismatch_message


def make_kmer_tokenizer(cfg: DnaTowerConfig) -> KmerTokenizer:
    return KmerTokenizer(k=cfg.k, vocab=cfg.vocab, max_nucleotides=cfg.max_nucleotides, stride=cfg.stride)


def dna_bert_config(cfg: DnaTowerConfig, tokenizer: KmerTokenizer) -> BertConfig:
    """The BERT shape for this tower (also what DNA pretraining builds its MLM model with)."""
    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=tokenizer.length,
        # No padding_idx: id 0 is [MASK] and padded positions are masked out anyway; a
        # padding_idx would freeze that row during masked-token pretraining.
        pad_token_id=None,
    )


def _check(source: str, found: BertConfig, cfg: DnaTowerConfig, tokenizer: KmerTokenizer) -> None:
    expected = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
    }
    diffs = {k: (getattr(found, k), v) for k, v in expected.items() if getattr(found, k) != v}
    if found.max_position_embeddings < tokenizer.length:
        diffs["max_position_embeddings"] = (found.max_position_embeddings, f">= {tokenizer.length} tokens")
    if diffs:
        note = f" (tokenizer k={tokenizer.k}, vocab={tokenizer.layout!r}, max_nucleotides={tokenizer.max_nucleotides})"
        raise CheckpointMismatchError(mismatch_message(source, "DNA checkpoint" + note, diffs))


def _encoder_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder tensors of a BertForMaskedLM (``bert.`` prefix) or BertModel state dict."""
    if any(k.startswith("bert.") for k in state_dict):
        state_dict = {k.removeprefix("bert."): v for k, v in state_dict.items() if k.startswith("bert.")}
    return {k: v for k, v in state_dict.items() if k.startswith(("embeddings.", "encoder."))}


def _config_from_state_dict(source: str, weights: dict[str, torch.Tensor], num_heads: int) -> BertConfig:
    try:
        vocab_size, hidden = weights["embeddings.word_embeddings.weight"].shape
        positions = weights["embeddings.position_embeddings.weight"].shape[0]
        type_vocab = weights["embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = weights["encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"{source}: not a BERT state dict (no {err.args[0]!r}, with or without 'bert.')") from None
    layers = len({k.split(".")[2] for k in weights if k.startswith("encoder.layer.")})
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        type_vocab_size=type_vocab,
        pad_token_id=None,
    )


def load_barcodebert(path: str | Path, cfg: DnaTowerConfig, tokenizer: KmerTokenizer) -> BertModel:
    path = Path(path)
    if path.is_dir():
        config = BertConfig.from_pretrained(path, local_files_only=True)
        _check(str(path), config, cfg, tokenizer)
        model, info = BertModel.from_pretrained(
            path, add_pooling_layer=False, local_files_only=True, output_loading_info=True
        )
        if info["missing_keys"] or info["mismatched_keys"]:
            missing = sorted(info["missing_keys"]) + [str(k) for k in info["mismatched_keys"]]
            raise CheckpointMismatchError(f"{path}: DNA checkpoint lacks or mis-shapes encoder weights: {missing[:5]}")
        return model
    weights = _encoder_weights(load_state_dict(path))
    config = _config_from_state_dict(str(path), weights, cfg.num_heads)
    _check(str(path), config, cfg, tokenizer)
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(weights, strict=True)
    return model


class DnaTower(nn.Module):
    """``forward(ids [B,L], mask [B,L]) -> [B, hidden]``: masked mean of the last layer."""

    default_lora_targets = ["query", "value"]

    def __init__(self, cfg: DnaTowerConfig, arch: Optional[dict] = None) -> None:
        super().__init__()
        if cfg.pooling != "mean":
            raise ValueError(f"dna.pooling={cfg.pooling!r}: only 'mean' (masked mean) is supported")
        self.tokenizer = make_kmer_tokenizer(cfg)
        if arch is not None:
            self.backbone = BertModel(BertConfig.from_dict(arch["bert"]), add_pooling_layer=False)
        elif cfg.pretrained:
            self.backbone = load_barcodebert(cfg.pretrained, cfg, self.tokenizer)
        else:
            self.backbone = BertModel(dna_bert_config(cfg, self.tokenizer), add_pooling_layer=False)
        self.output_dim = self.backbone.config.hidden_size
        self.arch = {"bert": self.backbone.config.to_dict()}

    def enable_gradient_checkpointing(self) -> None:
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        return masked_mean(hidden, mask)
