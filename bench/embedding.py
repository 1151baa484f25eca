"""Embedding new specimens: specimens/s of the paper config's image and DNA towers in
inference mode, as utilisation of the dense matmul FLOP/s measured in the same process
(same dtype and threads) and against plain fp32 eager (``torch.no_grad``) on the same
batch. Ours: the encoder evaluation and ``clibd embed`` use (clibd.embed.encoder.InferenceEncoder)
with ``compile``, in fp32 and in bf16 (weights cast once). All variants and the matmuls are
timed in turns (bench.compute.interleaved); compile time is reported, not timed."""

from __future__ import annotations

import time

import torch

from bench.common import Result
from bench.compute import (
    build_model,
    check_device,
    count_flops,
    interleaved,
    load_bench_config,
    matmul,
    sync,
    synthetic_batch,
    throughput_results,
)
from clibd.embed.encoder import InferenceEncoder, encode_batch


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
    compiled = {
        dtype: InferenceEncoder(model, dev, dtype, compile=True, batch_size=batch_size) for dtype in ("fp32", "bf16")
    }
    for modality in ("image", "dna"):

        def eager(m: str = modality) -> None:
            with torch.no_grad():
                encode_batch(model, batch, m)

        flops = count_flops(eager)
        warm = {dtype: _first_call_seconds(encoder, batch, modality, dev) for dtype, encoder in compiled.items()}
        seconds = interleaved(
            {
                "eager": eager,
                "fp32": lambda m=modality: compiled["fp32"](batch, m),
                "bf16": lambda m=modality: compiled["bf16"](batch, m),
                "matmul fp32": mm32,
                "matmul bf16": mm16,
            },
            dev,
            rounds,
        )
        results += throughput_results(
            f"embed {modality}",
            f"paper {modality} tower, batch {batch_size}, {device} {threads} threads, "
            f"{flops / batch_size / 1e9:.1f} GFLOP/specimen, best of {rounds} interleaved",
            "specimens",
            batch_size,
            flops,
            seconds,
            mm_flops,
            goals=(0.6, 2.0),
            eager_how="fp32 under no_grad",
            how={dtype: f"InferenceEncoder {dtype}, compiled in {warm[dtype]:.0f} s" for dtype in warm},
        )
    return results


def _first_call_seconds(encoder: InferenceEncoder, batch: dict, modality: str, device: torch.device) -> float:
    """The first call compiles: its time, which the interleaved rounds then leave out."""
    start = time.perf_counter()
    encoder(batch, modality)
    sync(device)
    return time.perf_counter() - start
