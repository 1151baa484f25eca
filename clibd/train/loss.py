"""Pairwise symmetric contrastive (CLIP) loss over every pair of modalities present.

Across processes each rank gathers the features of all ranks with an autograd-aware
all-gather and computes its *local rows* against the *global columns*. Each rank's loss
is the mean over its own rows, so the mean of the rank losses is the whole-batch loss.
The all-gather backward sums the column gradients of every rank into the rank that owns
the features, and DDP then averages over ranks: the averaged gradient is exactly the
gradient of the whole-batch loss (tests/test_loss_distributed.py checks this).
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence, get_args

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from clibd.config import MODALITIES, LossTargets

TARGETS = get_args(LossTargets)


def _gather_rows(x: Tensor, sizes: list[int], with_grad: bool) -> Tensor:
    """Concatenate ``x`` of every rank along dim 0; ranks may hold different row counts."""
    longest = max(sizes)
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, longest - x.shape[0]))
    if with_grad:
        parts = dist_nn.all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class ContrastiveLoss(nn.Module):
    """``loss(features, logit_scale, labels) -> (mean over pairs, {"image-dna": ..., ...})``.

    ``features``: modality -> L2-normalised ``[n_local, D]`` embeddings (at least two).
    ``logit_scale``: the model's ``logit_scale`` parameter, i.e. log of the scale.
    ``labels``: ``[n_local]`` int64 codes at the configured rank, ``-1`` unknown; needed for
    ``targets="label"`` (all samples sharing a known label are positives, each row of the
    target matrix normalised to sum 1; a sample with an unknown label is a positive only
    of itself). ``targets="identity"`` makes each sample the only positive of itself.
    ``targets="hierarchical"``: ``labels`` is ``[n_local, R]`` (one column per rank) and
    ``rank_weights`` has R weights; a pair's target weight is the sum of the weights of the
    ranks it shares (a sample shares every rank with itself), each row normalised to sum 1.
    Relatives of the same genus or family thus pull together, less than one species.
    """

    def __init__(
        self,
        targets: str = "identity",
        process_index: int = 0,
        world_size: int = 1,
        rank_weights: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if targets not in TARGETS:
            raise ValueError(f"loss targets must be one of {TARGETS}, got {targets!r}")
        if targets == "hierarchical" and (not rank_weights or min(rank_weights) < 0 or sum(rank_weights) <= 0):
            raise ValueError(f"hierarchical loss targets need non-negative rank weights, got {list(rank_weights)}")
        self.targets = targets
        self.rank_weights = torch.tensor(list(rank_weights), dtype=torch.float32)
        self.process_index = process_index
        self.world_size = world_size

    def _sizes(self, n_local: int, device: torch.device) -> list[int]:
        if self.world_size == 1:
            return [n_local]
        counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world_size)]
        dist.all_gather(counts, torch.tensor([n_local], dtype=torch.int64, device=device))
        return [int(c) for c in counts]

    def _soft_targets(self, labels: Tensor, global_labels: Tensor, offset: int) -> Tensor:
        """Row-normalised ``[n_local, n_global]`` positives matrix for label-aware targets."""
        n_local = labels.shape[0]
        same = (labels[:, None] == global_labels[None, :]) & (labels[:, None] >= 0)
        own = torch.arange(n_local, device=labels.device)
        same[own, own + offset] = True
        same = same.float()
        return same / same.sum(dim=1, keepdim=True)

    def _hierarchical_targets(self, labels: Tensor, global_labels: Tensor, offset: int) -> Tensor:
        """Row-normalised ``[n_local, n_global]`` sum of the weights of the ranks each pair shares."""
        weights = self.rank_weights.to(labels.device)
        if labels.dim() != 2 or labels.shape[1] != len(weights):
            raise ValueError(f"hierarchical targets need labels [n, {len(weights)}], got {list(labels.shape)}")
        same = (labels[:, None, :] == global_labels[None, :, :]) & (labels[:, None, :] >= 0)
        target = same.float() @ weights
        own = torch.arange(labels.shape[0], device=labels.device)
        target[own, own + offset] = weights.sum()
        return target / target.sum(dim=1, keepdim=True)

    def forward(
        self, features: dict[str, Tensor], logit_scale: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        present = [m for m in MODALITIES if m in features]
        if len(present) < 2:
            raise ValueError(f"contrastive loss needs at least two modalities, got {sorted(features)}")
        if self.targets != "identity" and labels is None:
            raise ValueError(f"loss targets {self.targets!r} need the labels tensor")
        n_local = features[present[0]].shape[0]
        device = features[present[0]].device
        sizes = self._sizes(n_local, device)
        offset = sum(sizes[: self.process_index])
        feats = {m: features[m].float() for m in present}
        if self.world_size == 1:
            global_feats = feats
        else:
            global_feats = {m: _gather_rows(feats[m], sizes, with_grad=True) for m in present}

        if self.targets == "identity":
            target: Tensor = torch.arange(n_local, device=device) + offset
        else:
            labels = labels.to(device)
            global_labels = labels if self.world_size == 1 else _gather_rows(labels, sizes, with_grad=False)
            soft = self._soft_targets if self.targets == "label" else self._hierarchical_targets
            target = soft(labels, global_labels, offset)

        scale = logit_scale.float().exp()
        per_pair: dict[str, Tensor] = {}
        for a, b in combinations(present, 2):
            a_to_b = scale * feats[a] @ global_feats[b].T
            b_to_a = scale * feats[b] @ global_feats[a].T
            # Sum / rows rather than mean: a rank whose batch lost every row to skipped
            # records contributes 0, not NaN, and still joins the all-gather.
            pair_sum = F.cross_entropy(a_to_b, target, reduction="sum") + F.cross_entropy(
                b_to_a, target, reduction="sum"
            )
            per_pair[f"{a}-{b}"] = pair_sum / (2 * max(n_local, 1))
        loss = torch.stack(list(per_pair.values())).mean()
        return loss, per_pair
