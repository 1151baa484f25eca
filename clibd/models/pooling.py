"""Token pooling for the BERT towers."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B,L,H]`` over positions where ``mask [B,L]`` is non-zero.

    Padding is excluded by selection, not multiplication, so even a non-finite value at a
    padded position cannot leak in; an all-padding row pools to zeros.
    """
    keep = mask.bool().unsqueeze(-1)
    total = hidden.masked_fill(~keep, 0).sum(dim=1)
    count = keep.sum(dim=1).clamp(min=1).to(hidden.dtype)
    return total / count


POOLINGS = ("mean", "mean_all", "cls")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``mean``: masked mean; ``mean_all``: mean over every position, padding included (what
    the original CLIBD computes); ``cls``: the first position."""
    if how == "mean":
        return masked_mean(hidden, mask)
    if how == "mean_all":
        return hidden.mean(dim=1)
    if how == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {how!r}; choose one of {POOLINGS}")
