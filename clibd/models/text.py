"""Text tower: a transformers encoder over taxonomy strings, masked-mean, CLS or all-position-mean pooled.

The encoder always gets the attention mask; ``mean_all`` pooling then averages every one of
the ``max_length`` positions, padding included, as the published system does (20 tokens).

``cfg.name`` (``TextTowerConfig``) is a model name (``prajjwal1/bert-small``) or a local
directory holding model + tokenizer. With ``name: null`` the tower is a BERT built from the
size fields over a WordPiece vocabulary trained on the data's taxonomy strings
(:func:`build_text_tokenizer`), which is what the offline demo uses.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import torch
from tokenizers import BertWordPieceTokenizer
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    PreTrainedTokenizerBase,
)

from clibd.config import TextTowerConfig
from clibd.models.pooling import POOLINGS, pool

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Position table of a tower built from the size fields; taxonomy strings are far shorter.
_MIN_POSITIONS = 512


def _positions(cfg: TextTowerConfig) -> int:
    return max(cfg.max_length or 0, _MIN_POSITIONS)


def _local(name: str) -> bool:
    return Path(name).exists()


def build_text_tokenizer(cfg: TextTowerConfig, corpus: Optional[Sequence[str]] = None) -> PreTrainedTokenizerBase:
    """The tokenizer of ``cfg.name``, or (``name: null``) a WordPiece one trained on ``corpus``."""
    if cfg.name is not None:
        return AutoTokenizer.from_pretrained(cfg.name, local_files_only=_local(cfg.name))
    if not corpus:
        raise ValueError("text.name is null: a tokenizer must be trained, so pass the taxonomy strings as corpus")
    wordpiece = BertWordPieceTokenizer(vocab=_data_vocabulary(corpus, cfg.vocab_size), lowercase=True)
    return BertTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        # transformers rebuilds the normalizer from this flag when the tokenizer is reloaded
        do_lower_case=True,
        model_max_length=_positions(cfg),
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def _data_vocabulary(corpus: Sequence[str], vocab_size: int) -> dict[str, int]:
    """Special tokens, every character (word-initial and ``##`` continuation), then the most
    frequent whole words (ties alphabetical) up to ``vocab_size``.

    Chosen rather than the tokenizers WordPiece trainer, whose merges are broken by hash-map
    order and so gave a different vocabulary (and model) on every run. Taxonomy strings are
    rank names, so whole names are the natural units; an unseen name falls back to characters.
    """
    splitter = BertWordPieceTokenizer(lowercase=True)
    counts: Counter[str] = Counter()
    for text, n in Counter(corpus).items():
        normalised = splitter.normalizer.normalize_str(text)
        counts.update({word: n for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalised)})
    chars = sorted({c for word in counts for c in word})
    tokens = _SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1]
    tokens += words[: max(vocab_size - len(tokens), 0)]
    return {token: i for i, token in enumerate(tokens)}


def _drop_pooler(model: nn.Module) -> nn.Module:
    # The pooler is never used; left in, its parameters get no gradient, which DDP rejects.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def _tokenizer(cfg: TextTowerConfig, tokenizer: PreTrainedTokenizerBase | Path | None) -> PreTrainedTokenizerBase:
    if tokenizer is None:
        return build_text_tokenizer(cfg)
    if isinstance(tokenizer, Path):
        return AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    return tokenizer


class TextTower(nn.Module):
    """``forward(ids [B,T], mask [B,T]) -> [B, hidden]``; ``tokenizer``: the one its ids come from.

    ``tokenizer`` given as a tokenizer, a directory holding one (a saved model's ``text_tokenizer/``),
    or None: ``cfg.name``'s (:func:`build_text_tokenizer`).
    """

    default_lora_targets = ["query", "value"]

    def __init__(
        self,
        cfg: TextTowerConfig,
        tokenizer: PreTrainedTokenizerBase | Path | None = None,
        arch: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"text.pooling={cfg.pooling!r}: choose one of {POOLINGS}")
        self.pooling = cfg.pooling
        self.tokenizer = tokenizer = _tokenizer(cfg, tokenizer)
        if arch is not None:
            config = AutoConfig.for_model(**arch["config"])
            self.backbone = _drop_pooler(AutoModel.from_config(config))
        elif cfg.name is not None:
            self.backbone = _drop_pooler(AutoModel.from_pretrained(cfg.name, local_files_only=_local(cfg.name)))
        else:
            config = BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
                max_position_embeddings=_positions(cfg),
                pad_token_id=tokenizer.pad_token_id,
            )
            self.backbone = BertModel(config, add_pooling_layer=False)
        if self.backbone.config.vocab_size < len(tokenizer):
            raise ValueError(
                f"text tokenizer has {len(tokenizer)} tokens but the text model's vocab_size is "
                f"{self.backbone.config.vocab_size}"
            )
        self.output_dim = self.backbone.config.hidden_size
        self.arch = {"config": self.backbone.config.to_dict()}

    def enable_gradient_checkpointing(self) -> None:
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.pooling)
