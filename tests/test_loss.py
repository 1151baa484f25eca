"""ContrastiveLoss on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from clibd.train.loss import ContrastiveLoss

EYE = torch.eye(2)
ZERO = torch.tensor(0.0)  # log scale 0 -> scale 1, logits = cosine similarities


def test_identity_targets_two_orthogonal_pairs() -> None:
    # logits = I: each row is CE([1, 0], target = own column) = log(1 + e^-1)
    loss, pairs = ContrastiveLoss()({"image": EYE, "dna": EYE}, ZERO)
    assert list(pairs) == ["image-dna"]
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_logit_scale_is_exponentiated() -> None:
    loss, _ = ContrastiveLoss()({"image": EYE, "dna": EYE}, torch.tensor(math.log(3.0)))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3)), abs=1e-6)


def test_label_targets_share_positives() -> None:
    # Both samples share label 0: target row [.5, .5]; loss = log(1 + e) - 0.5
    loss, _ = ContrastiveLoss("label")({"image": EYE, "dna": EYE}, ZERO, torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(math.log(1 + math.e) - 0.5, abs=1e-6)


def test_unknown_labels_are_positives_only_of_themselves() -> None:
    feats = {"image": EYE, "dna": EYE}
    identity, _ = ContrastiveLoss()(feats, ZERO)
    unknown, _ = ContrastiveLoss("label")(feats, ZERO, torch.tensor([-1, -1]))
    distinct, _ = ContrastiveLoss("label")(feats, ZERO, torch.tensor([3, 4]))
    torch.testing.assert_close(unknown, identity)
    torch.testing.assert_close(distinct, identity)


def test_three_modalities_average_the_symmetric_pairs() -> None:
    swapped = EYE.flip(0)  # text matches the other sample: logits = [[0,1],[1,0]]
    loss, pairs = ContrastiveLoss()({"text": swapped, "image": EYE, "dna": EYE}, ZERO)
    assert list(pairs) == ["image-dna", "image-text", "dna-text"]
    good, bad = math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))
    assert pairs["image-dna"].item() == pytest.approx(good, abs=1e-6)
    assert pairs["image-text"].item() == pytest.approx(bad, abs=1e-6)
    assert loss.item() == pytest.approx((good + 2 * bad) / 3, abs=1e-6)


def test_asymmetric_logits_average_both_directions() -> None:
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    dna = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # image->dna rows: [1,0] twice (targets 0, 1); dna->image rows: [1,1] and [0,0]
    i2d = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    d2i = math.log(2)
    loss, _ = ContrastiveLoss()({"image": image, "dna": dna}, ZERO)
    assert loss.item() == pytest.approx((i2d + d2i) / 2, abs=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="at least two modalities"):
        ContrastiveLoss()({"image": EYE}, ZERO)
    with pytest.raises(ValueError, match="need the labels"):
        ContrastiveLoss("label")({"image": EYE, "dna": EYE}, ZERO)
    with pytest.raises(ValueError, match="identity"):
        ContrastiveLoss("soft")


def test_hierarchical_targets_weigh_the_shared_ranks() -> None:
    # Columns (genus, species), weights (0.5, 1): samples 0 and 1 share the genus only, sample 2
    # shares nothing. Rows of the target: [1.5, .5, 0] / 2, [.5, 1.5, 0] / 2, [0, 0, 1].
    loss_fn = ContrastiveLoss("hierarchical", rank_weights=(0.5, 1.0))
    labels = torch.tensor([[0, 0], [0, 1], [1, 2]])
    target = loss_fn._hierarchical_targets(labels, labels, 0)
    torch.testing.assert_close(target, torch.tensor([[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]))
    eye = torch.eye(3)
    loss, _ = loss_fn({"dna": eye, "text": eye}, ZERO, labels)
    # logits = I; rows 0-1: log(e + 2) - 0.75; row 2: log(e + 2) - 1
    expected = math.log(math.e + 2) - (0.75 + 0.75 + 1.0) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_hierarchical_unknown_rank_is_not_shared() -> None:
    loss_fn = ContrastiveLoss("hierarchical", rank_weights=(0.5, 1.0))
    labels = torch.tensor([[-1, 0], [-1, 1]])  # genus unknown in both: not a shared genus
    torch.testing.assert_close(loss_fn._hierarchical_targets(labels, labels, 0), torch.eye(2))


def test_hierarchical_targets_need_weights_and_label_columns() -> None:
    with pytest.raises(ValueError, match="non-negative rank weights"):
        ContrastiveLoss("hierarchical")
    loss_fn = ContrastiveLoss("hierarchical", rank_weights=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"labels \[n, 2\], got \[2\]"):
        loss_fn({"dna": EYE, "text": EYE}, ZERO, torch.tensor([0, 1]))
