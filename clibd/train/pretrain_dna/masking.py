"""The masking rule of the pretraining objective."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label of tokens that are not predicted (torch / HF convention)


def mask_tokens(
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    ratio: float,
    mask_id: int,
    kmer_offset: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` for masked-token prediction.

    Each *maskable* token (a real k-mer: id >= ``kmer_offset`` and attention mask 1, so never
    UNK, padding, CLS or MASK) is chosen independently with probability ``ratio``. Every chosen
    token is replaced by ``mask_id`` (no BERT 80/10/10 split: all chosen tokens become
    [MASK]) and its label is its original id; all other labels are ``IGNORE_INDEX``.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
    maskable = (attention_mask != 0) & (ids >= kmer_offset)
    draw = torch.rand(ids.shape, generator=generator, device=ids.device if generator is None else generator.device)
    chosen = maskable & (draw.to(ids.device) < ratio)
    inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels
