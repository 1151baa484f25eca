"""The optimiser set-up shared by training and DNA pretraining, against hand-written oracles:
the published recipe's switches (cycle_momentum, warmup_fraction as pct_start, decay_all_params)."""

from __future__ import annotations

import math

import pytest
import torch

from clibd.config import DnaTowerConfig, ModelConfig, OptimConfig
from clibd.train.optim import build_optimizer, build_scheduler, param_groups, tower_lr_scales


def _onecycle_oracle(step: int, total: int, pct_start: float, peak: float) -> tuple[float, float]:
    """(lr, beta1) at ``step`` of PyTorch's OneCycle with cosine annealing, written out: lr rises
    from peak/25 to peak over the first pct_start of the steps (beta1 falls 0.95 -> 0.85), then
    falls to peak/25/1e4 (beta1 rises back to 0.95)."""
    start, end = peak / 25, peak / 25 / 1e4
    warm_end = pct_start * total - 1

    def cos(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)

    if step <= warm_end:
        pct = step / warm_end
        return cos(start, peak, pct), cos(0.95, 0.85, pct)
    pct = (step - warm_end) / (total - 1 - warm_end)
    return cos(peak, end, pct), cos(0.85, 0.95, pct)


def _trace(cfg: OptimConfig, total: int) -> list[tuple[float, float]]:
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg, lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, total)
    trace = []
    for _ in range(total):
        group = optimizer.param_groups[0]
        trace.append((group["lr"], group["betas"][0]))
        optimizer.step()
        scheduler.step()
    return trace


@pytest.mark.parametrize("cycle_momentum", [True, False])
def test_onecycle_lr_and_beta1_trace_match_the_oracle(cycle_momentum: bool) -> None:
    cfg = OptimConfig(lr=1e-3, warmup_fraction=0.3, cycle_momentum=cycle_momentum)  # the paper's pct_start
    trace = _trace(cfg, total=10)
    for step, (lr, beta1) in enumerate(trace):
        want_lr, want_beta1 = _onecycle_oracle(step, 10, 0.3, 1e-3)
        assert lr == pytest.approx(want_lr, rel=1e-9), step
        # without cycling AdamW keeps its beta1 of 0.9 throughout (the published recipe)
        assert beta1 == pytest.approx(want_beta1 if cycle_momentum else 0.9, rel=1e-9), step
    assert trace[2][0] == pytest.approx(1e-3)  # the peak at step pct_start * total - 1 = 2


def test_decay_all_params_puts_every_parameter_in_one_decayed_group() -> None:
    model = torch.nn.Module()
    model.proj, model.norm = torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    model.frozen = torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)
    ids = lambda ps: sorted(map(id, ps))  # noqa: E731
    everything = [model.proj.weight, model.proj.bias, model.norm.weight, model.norm.bias, model.logit_scale]
    groups = param_groups(model, 0.01, decay_all=True)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01 and ids(groups[0]["params"]) == ids(everything)
    ours = param_groups(model, 0.01)
    assert [g["weight_decay"] for g in ours] == [0.01, 0.0]
    assert ids(ours[0]["params"]) == ids([model.proj.weight])
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05, decay_all_params=True), lr=1e-3)
    assert [(g["weight_decay"], len(g["params"])) for g in optimizer.param_groups] == [(0.05, 5)]


def test_tower_lr_scale_gives_the_tower_and_its_head_their_own_learning_rate() -> None:
    model = torch.nn.Module()
    model.towers, model.heads = torch.nn.ModuleDict(), torch.nn.ModuleDict()
    model.towers["dna"], model.towers["text"] = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    model.heads["dna"], model.heads["text"] = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    cfg = ModelConfig(dna=DnaTowerConfig(lr_scale=0.1))
    scales = tower_lr_scales(cfg)
    assert scales == {"towers.dna.": 0.1, "heads.dna.": 0.1}
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05), lr=1e-3, lr_scales=scales)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        want = 1e-4 if "dna" in name else 1e-3
        assert lr_of[id(p)] == pytest.approx(want), name
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(model.towers["dna"].weight)] == 0.05 and decay_of[id(model.towers["dna"].bias)] == 0.0
    # OneCycle peaks each group at its own learning rate (step 1 of 4 with half the steps warming up).
    scheduler = build_scheduler(optimizer, OptimConfig(warmup_fraction=0.5), total_steps=4)
    optimizer.step()
    scheduler.step()
    peaks = sorted({round(g["lr"], 12) for g in optimizer.param_groups})
    assert peaks == [pytest.approx(1e-4), pytest.approx(1e-3)]
