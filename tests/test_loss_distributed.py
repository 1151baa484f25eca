"""Two gloo processes with half the batch each == one process with the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clibd.train.loss import ContrastiveLoss

N, IN, DIM = 8, 6, 4
# Known labels shared across the two halves, and unknown (-1) ones.
LABELS = torch.tensor([0, 1, 0, -1, 2, 1, -1, 0])


class TinyTowers(nn.Module):
    """One linear layer per modality and a logit scale: enough to carry gradients."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.towers = nn.ModuleDict({m: nn.Linear(IN, DIM) for m in ("image", "dna", "text")})
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: F.normalize(self.towers[m](x), dim=-1) for m, x in inputs.items()}


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(N, IN, generator=g) for m in ("image", "dna", "text")}


def _one_step(model: nn.Module, loss_fn: ContrastiveLoss, inputs, labels) -> dict[str, object]:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, per_pair = loss_fn(model(inputs), getattr(model, "module", model).logit_scale, labels)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    strip = lambda d: {k.removeprefix("module."): v for k, v in d.items()}  # noqa: E731
    return {
        "loss": loss.detach(),
        "pairs": {k: v.detach() for k, v in per_pair.items()},
        "grads": strip(grads),
        "params": strip(params),
    }


# (name, targets, rows of rank 0): equal halves as in training, and an uneven last batch.
CASES = [("identity", "identity", 4), ("label", "label", 4), ("uneven", "label", 5)]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    inputs = _inputs()
    for name, targets, split in CASES:
        rows = slice(0, split) if rank == 0 else slice(split, N)
        model = DistributedDataParallel(TinyTowers())
        loss_fn = ContrastiveLoss(targets, process_index=rank, world_size=2)
        results[name] = _one_step(model, loss_fn, {m: x[rows] for m, x in inputs.items()}, LABELS[rows])
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("name,targets", [("identity", "identity"), ("label", "label")])
def test_two_processes_equal_one_process(two_process_results, name: str, targets: str) -> None:
    single = _one_step(TinyTowers(), ContrastiveLoss(targets), _inputs(), LABELS)
    ranks = [r[name] for r in two_process_results]
    # The mean of the rank losses is the whole-batch loss (equal halves).
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single["loss"])
    for pair in ("image-dna", "image-text", "dna-text"):
        torch.testing.assert_close((ranks[0]["pairs"][pair] + ranks[1]["pairs"][pair]) / 2, single["pairs"][pair])
    # DDP-averaged gradients and the updated parameters equal the single process's, on both ranks.
    for r in ranks:
        for key in single["grads"]:
            torch.testing.assert_close(r["grads"][key], single["grads"][key], msg=f"gradient of {key}")
            torch.testing.assert_close(r["params"][key], single["params"][key], msg=f"parameter {key}")
    assert single["grads"]["logit_scale"].abs() > 0


def test_uneven_last_batch_gathers_all_rows(two_process_results) -> None:
    """5 + 3 rows: every rank sees all 8 columns; row-weighted rank losses = whole-batch loss."""
    single = _one_step(TinyTowers(), ContrastiveLoss("label"), _inputs(), LABELS)
    r0, r1 = (r["uneven"] for r in two_process_results)
    torch.testing.assert_close((5 * r0["loss"] + 3 * r1["loss"]) / 8, single["loss"])
