"""DNA tower: a BarcodeBERT-style ``transformers.BertModel`` over k-mer tokens, pooled.

``cfg.pretrained`` (``DnaTowerConfig``) is either a local HF-format directory
(``BertForMaskedLM`` or ``BertModel`` weights + ``config.json``: what ``save_pretrained`` and
``clibd pretrain-dna`` write, and the hub layout of ``bioscan-ml/BarcodeBERT``), or a plain
state-dict file of a ``BertForMaskedLM`` (BarcodeBERT's older release format: keys prefixed
``bert.``, and ``module.`` when saved from a DDP-wrapped model; ``.pt/.pth/.bin`` read
weights-only, or ``.safetensors``). A directory that declares its k-mer tokenizer
(``dna_tokenizer.json``, or the hub's ``tokenizer_config.json`` + ``vocab_size``) sets the
tokenizer fields of ``cfg`` (a warning names each one it changes). The vocabulary must then
be the one of the ``KmerTokenizer`` and the sizes those of the config, else the checkpoint is
refused with the differing fields named.

Embedding (``cfg.head``, ``cfg.pooling``, ``cfg.attention_mask``): ours is the masked mean of
the last hidden state (a projection head follows in ``CLIBDModel``). The original CLIBD's is
``mlm_softmax`` + ``mean_all`` + no attention mask: BertForMaskedLM's MLM head transform
(dense + GELU + LayerNorm), its decoder replaced by Linear(hidden, embed_dim), a softmax over
those outputs, then the mean over every position, padding included (docs/published.md).

``pooling: kmer_bag`` adds a bag-of-k-mers path (docs/dna_recipe.md): the mean of the word
embeddings of the sequence's ACGT k-mers (no position, no normalisation), the learned form of
k-mer counting; with overlapping k-mers (``stride: 1``) it does not depend on the reading
frame. The transformer's masked mean is added to it when ``num_layers > 0``; with 0 layers the
tower is the bag alone and the transformer is not run. It adds no weights.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

from clibd.config import DnaTowerConfig
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.models.kmer_bag import KmerTower
from clibd.models.pooling import pool
from clibd.models.weights import CheckpointMismatchError, find_weights_file, load_state_dict, mismatch_message

# Our pretrain-dna output records its tokenizer here (KmerTokenizer.settings()).
TOKENIZER_FILE = "dna_tokenizer.json"
_MLM_TRANSFORM = "cls.predictions.transform."


def checkpoint_tokenizer_settings(path: Path) -> dict:
    """The DnaTowerConfig tokenizer fields a checkpoint directory declares; {} when it declares none.

    Ours: ``dna_tokenizer.json``. The hub layout of bioscan-ml/BarcodeBERT: ``tokenizer_config.json``
    with ``k`` / ``stride`` / ``max_len`` (its KmerTokenizer's arguments), vocabulary ``[MASK]``,
    ``[UNK]`` + k-mers, no prefix token; the layout follows from ``config.json``'s ``vocab_size``
    (4^k + 2 or 4^k + 3), and k from it when the tokenizer config does not give one.
    """
    ours = path / TOKENIZER_FILE
    if ours.is_file():
        saved = json.loads(ours.read_text())
        fields = {"k": "k", "stride": "stride", "vocab": "vocab", "max_nucleotides": "max_nucleotides"}
        settings = {field: saved[key] for key, field in fields.items() if key in saved}
        if "prefix_id" in saved and saved.get("vocab") == "barcodebert_v1":
            settings["prefix_token_id"] = saved["prefix_id"]
        # Absent: the defaults (KmerTokenizer.settings() leaves them out), which the file declares too.
        settings["kmer_patterns"] = saved.get("patterns", [])
        settings["reading_frame"] = saved.get("reading_frame", False)
        return settings
    hub, config = path / "tokenizer_config.json", path / "config.json"
    if not (hub.is_file() and config.is_file()):
        return {}
    declared = json.loads(hub.read_text())
    vocab_size = json.loads(config.read_text()).get("vocab_size")
    k = declared.get("k") or next((k for k in range(1, 13) if vocab_size in (4**k + 2, 4**k + 3)), None)
    if k is None or vocab_size not in (4**k + 2, 4**k + 3):
        return {}
    layout = "barcodebert" if vocab_size == 4**k + 2 else "barcodebert_v1"
    settings = {"k": k, "stride": declared.get("stride") or k, "vocab": layout}
    if declared.get("max_len"):
        settings["max_nucleotides"] = declared["max_len"]
    return settings


def adopt_checkpoint_tokenizer(cfg: DnaTowerConfig) -> None:
    """Set ``cfg``'s tokenizer fields to what ``cfg.pretrained`` declares, warning for each change.

    In place, so the run's saved config and the saved model record the tokenizer actually used.
    """
    if not cfg.pretrained or not Path(cfg.pretrained).is_dir():
        return
    settings = checkpoint_tokenizer_settings(Path(cfg.pretrained))
    if cfg.stride is None and "stride" in settings and settings["stride"] == settings.get("k", cfg.k):
        settings.pop("stride")  # None already means stride = k
    for field, value in settings.items():
        if getattr(cfg, field) != value:
            warnings.warn(
                f"model.dna.{field}: {getattr(cfg, field)!r} -> {value!r}, as the checkpoint {cfg.pretrained} declares",
                stacklevel=2,
            )
            setattr(cfg, field, value)


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


def _split_weights(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(encoder tensors, MLM head transform tensors) of a BertForMaskedLM (``bert.`` prefix) or
    BertModel state dict, with or without the ``module.`` prefix of a DDP-wrapped model."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    transform = {k.removeprefix(_MLM_TRANSFORM): v for k, v in state_dict.items() if k.startswith(_MLM_TRANSFORM)}
    if any(k.startswith("bert.") for k in state_dict):
        state_dict = {k.removeprefix("bert."): v for k, v in state_dict.items() if k.startswith("bert.")}
    # Old transformers saved the position_ids buffer; today it is not part of the state dict.
    encoder = {
        k: v
        for k, v in state_dict.items()
        if k.startswith(("embeddings.", "encoder.")) and k != "embeddings.position_ids"
    }
    return encoder, transform


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


def load_barcodebert(
    path: str | Path, cfg: DnaTowerConfig, tokenizer: KmerTokenizer
) -> tuple[BertModel, dict[str, torch.Tensor]]:
    """The encoder, and the MLM head transform's tensors ({} when the checkpoint has no MLM head)."""
    path = Path(path)
    if path.is_dir():
        config = BertConfig.from_pretrained(path, local_files_only=True)
        encoder, transform = _split_weights(load_state_dict(find_weights_file(path, "DNA")))
    else:
        encoder, transform = _split_weights(load_state_dict(path))
        config = _config_from_state_dict(str(path), encoder, cfg.num_heads)
    _check(str(path), config, cfg, tokenizer)
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{path}: DNA checkpoint does not fit a BertModel: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model, transform


class DnaTower(KmerTower):
    """``forward(ids [B,L], mask [B,L]) -> [B, output_dim]``.

    ``head: linear``: the pooled last layer, ``output_dim`` = hidden size. ``head: mlm_softmax``:
    the pooled softmax of the MLM head, ``output_dim`` = ``embed_dim``. ``head: identity``: the
    pooled last layer is the embedding (hidden size = ``embed_dim``). Two flags say which:
    ``ends_in_embedding_space`` (mlm_softmax, identity: CLIBDModel adds no projection head) and
    ``has_mlm_softmax_head`` (mlm_softmax: the forward runs that head). Settings that cannot work
    together are refused by ``clibd.config.check_dna_tower``.
    """

    def __init__(self, cfg: DnaTowerConfig, arch: Optional[dict] = None, embed_dim: Optional[int] = None) -> None:
        if arch is None:
            adopt_checkpoint_tokenizer(cfg)
        super().__init__(cfg)
        transform_weights: dict[str, torch.Tensor] = {}
        if arch is not None:
            self.backbone = BertModel(BertConfig.from_dict(arch["bert"]), add_pooling_layer=False)
        elif cfg.pretrained:
            self.backbone, transform_weights = load_barcodebert(cfg.pretrained, cfg, self.tokenizer)
        else:
            self.backbone = BertModel(dna_bert_config(cfg, self.tokenizer), add_pooling_layer=False)
        self.output_dim = self.backbone.config.hidden_size
        if cfg.head == "mlm_softmax":
            self._add_mlm_softmax_head(cfg, transform_weights, embed_dim)
        self.arch = {"bert": self.backbone.config.to_dict()}

    def _add_mlm_softmax_head(self, cfg: DnaTowerConfig, transform_weights: dict, embed_dim: Optional[int]) -> None:
        if embed_dim is None:
            raise ValueError("dna.head=mlm_softmax: the tower needs the model's embed_dim")
        self.transform = BertPredictionHeadTransform(self.backbone.config)
        if cfg.pretrained and not transform_weights:
            raise CheckpointMismatchError(
                f"{cfg.pretrained}: dna.head=mlm_softmax needs the MLM head of a BertForMaskedLM "
                f"({_MLM_TRANSFORM}*), which this checkpoint lacks"
            )
        if transform_weights:
            self.transform.load_state_dict(transform_weights, strict=True)
        # The original replaces the MLM decoder (hidden -> vocabulary) by a fresh Linear(hidden, embed_dim).
        self.decoder = nn.Linear(self.backbone.config.hidden_size, embed_dim)
        self.output_dim = embed_dim

    def enable_gradient_checkpointing(self) -> None:
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "kmer_bag":
            bag = self._kmer_bag(ids, mask)
            if self.backbone.config.num_hidden_layers == 0:
                return bag
        attention = mask if self.use_attention_mask else None  # None: BERT attends to every position
        hidden = self.backbone(input_ids=ids, attention_mask=attention).last_hidden_state
        if self.has_mlm_softmax_head:
            hidden = self.decoder(self.transform(hidden)).softmax(dim=-1)
        if self.pooling == "kmer_bag":
            return pool(hidden, mask, "mean") + bag
        return pool(hidden, mask, self.pooling)
