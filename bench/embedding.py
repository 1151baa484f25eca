"""Embedding new specimens: specimens/s of the paper config's image and DNA towers in
inference mode, as utilisation of the dense matmul FLOP/s measured in the same process
(same dtype and threads) and against plain fp32 eager (``torch.no_grad``) on the same
batch. Ours: ``inference_mode`` in fp32, and with the weights cast to bf16 once (autocast
would cast them again on every call). All variants and the matmuls are timed in turns
(bench.compute.interleaved)."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from bench.common import Result
from bench.compute import build_model, check_device, count_flops, interleaved, load_bench_config, matmul, synthetic_batch, throughput_results
from clibd.embed import encode_batch


def run(device: str, quick: bool) -> list[Result]:
    dev = check_device(device)
    cpu = dev.type == "cpu"
    batch_size, rounds, matmul_n = (4 if quick else 8, 1 if quick else 2, 2048) if cpu else (256, 5, 8192)
    cfg = load_bench_config("paper")
    cfg.model.text.enabled = False
    model = build_model(cfg).to(dev).eval()
    batch = synthetic_batch(model, cfg, batch_size, dev)
    mm32, mm_flops = matmul(dev, torch.float32, matmul_n)
    mm16, _ = matmul(dev, torch.bfloat16, matmul_n)
    threads = torch.get_num_threads()
    results = []
    # Inference needs no fp32 master weights: cast them once, not on every call as autocast does.
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    batch_bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    for modality in ("image", "dna"):
        def embed(m: torch.nn.Module, b: dict, mode: Callable) -> Callable[[], None]:
            def call() -> None:
                with mode():
                    encode_batch(m, b, modality)
            return call

        flops = count_flops(embed(model, batch, torch.no_grad))
        seconds = interleaved({
            "eager": embed(model, batch, torch.no_grad),
            "fp32": embed(model, batch, torch.inference_mode),
            "bf16": embed(model_bf16, batch_bf16, torch.inference_mode),
            "matmul fp32": mm32,
            "matmul bf16": mm16,
        }, dev, rounds)
        results += throughput_results(
            f"embed {modality}",
            f"paper {modality} tower, batch {batch_size}, {device} {threads} threads, "
            f"{flops / batch_size / 1e9:.1f} GFLOP/specimen, best of {rounds} interleaved",
            "specimens", batch_size, flops, seconds, mm_flops,
            goals=(0.6, 2.0), ours_how="inference_mode", eager_how="fp32 under no_grad", bf16_how="bf16 weights",
        )
    return results
