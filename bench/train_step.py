"""Training step: samples/s of a full step (3 towers forward + backward + AdamW) for the
demo and the paper config, as utilisation of the dense matmul FLOP/s measured in the same
process (same dtype, same threads) and against the same model in plain fp32 eager mode.
All variants and the matmuls are timed in turns (bench.compute.interleaved)."""

from __future__ import annotations

from typing import Callable

import torch

from bench.common import Result
from bench.compute import (
    autocast,
    build_model,
    check_device,
    count_flops,
    interleaved,
    load_bench_config,
    matmul,
    synthetic_batch,
    throughput_results,
)
from clibd.config import ConfigError
from clibd.train.loss import ContrastiveLoss
from clibd.train.optim import param_groups


def make_step(
    model: torch.nn.Module, batch: dict, device: torch.device, bf16: bool, optimizer: torch.optim.Optimizer
) -> Callable[[], None]:
    loss_fn = ContrastiveLoss()

    def step() -> None:
        with autocast(device, bf16):
            loss, _ = loss_fn(*model(batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run(device: str, quick: bool) -> list[Result]:
    dev = check_device(device)
    cpu = dev.type == "cpu"
    rounds, matmul_n = (1, 2048) if cpu else (5, 8192)
    results = []
    for name in ("demo", "paper"):
        try:
            cfg = load_bench_config(name)
        except (FileNotFoundError, ConfigError) as err:
            print(f"train step {name}: skipped: {err}")
            continue
        # The demo at its own batch; the paper model at a small one on CPU.
        batch_size = cfg.train.batch_size if name == "demo" else ((2 if quick else 4) if cpu else 64)
        model = build_model(cfg).to(dev).train()
        batch = synthetic_batch(model, cfg, batch_size, dev)
        # torch's default AdamW is a per-tensor loop on CPU (foreach on CUDA); ours is fused.
        plain = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
        fused = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5, fused=True)
        eager_step = make_step(model, batch, dev, bf16=False, optimizer=plain)
        flops = count_flops(eager_step)
        mm32, mm_flops = matmul(dev, torch.float32, matmul_n)
        mm16, _ = matmul(dev, torch.bfloat16, matmul_n)
        seconds = interleaved(
            {
                "eager": eager_step,
                "fp32": make_step(model, batch, dev, bf16=False, optimizer=fused),
                "bf16": make_step(model, batch, dev, bf16=True, optimizer=fused),
                "matmul fp32": mm32,
                "matmul bf16": mm16,
            },
            dev,
            rounds,
        )
        threads = torch.get_num_threads()
        results += throughput_results(
            f"train step {name}",
            f"{name} config, batch {batch_size}, image {cfg.model.image.image_size}, {device} {threads} threads, "
            f"{flops / batch_size / 1e9:.3g} GFLOP/sample, best of {rounds} interleaved",
            "samples",
            batch_size,
            flops,
            seconds,
            mm_flops,
            goals=(0.5, 1.5) if name == "paper" else (None, None),
            how={"fp32": "fused AdamW", "bf16": "fused AdamW, bf16 autocast"},
            eager_how="fp32, torch's default AdamW",
        )
        del model, batch, plain, fused
    return results
