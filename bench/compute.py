"""Model throughput against the machine: FLOPs of a step, dense matmul FLOP/s, and the
paper / demo models built from the repo's configs with random init (nothing downloaded)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import REPO, SHARED_DATA, Result
from clibd.config import Config, load_config
from clibd.models.clibd_model import CLIBDModel
from clibd.models.text import build_text_tokenizer
from clibd.taxonomy import ALL_RANKS, taxonomy_text

PAPER_CONFIG = REPO / "configs" / "bioscan5m" / "image_dna_text.yaml"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
# Random init, no hub: the text tower is built from its size fields (bert-small's 4x512).
OFFLINE = ["model.image.pretrained=null", "model.text.name=null", "model.dna.pretrained=null"]


def check_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is visible to torch on this machine")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, bf16: bool) -> ContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, float]:
    """Best seconds per call of each function, timed in turns (one untimed warm-up round,
    then ``rounds`` rounds calling each once), so load from other processes on the machine
    falls on every variant alike rather than on whichever ran during a busy spell."""
    best = dict.fromkeys(fns, float("inf"))
    for i in range(rounds + 1):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if i:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def matmul(device: torch.device, dtype: torch.dtype, n: int) -> tuple[Callable[[], object], int]:
    """A dense square matmul and its FLOPs: the throughput model FLOPs are measured against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return (lambda: a @ b), 2 * n**3


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def load_bench_config(name: str) -> Config:
    path = {"paper": PAPER_CONFIG, "demo": DEMO_CONFIG}[name]
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config {name!r} needs {path.relative_to(REPO)}, which is absent")
    return load_config(path, OFFLINE if name == "paper" else [])


def _specimens(n: int) -> pd.DataFrame:
    """Real BOLD barcodes and taxonomy (shared data), repeated to ``n`` rows."""
    table = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t")
    table = table.rename(columns={f"{rank}_name": rank for rank in ALL_RANKS})
    return table.iloc[np.arange(n) % len(table)].reset_index(drop=True)


def build_model(cfg: Config) -> CLIBDModel:
    text = cfg.model.text
    tokenizer = None
    if text.enabled and text.name is None:
        tokenizer = build_text_tokenizer(
            text, taxonomy_text(_specimens(4000), text.template, text.missing_word).tolist()
        )
    torch.manual_seed(0)
    return CLIBDModel(cfg.model, tokenizer)


def synthetic_batch(model: CLIBDModel, cfg: Config, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch in the architecture.md layout: random normalised images, real barcodes and
    taxonomy strings through the model's own tokenizers."""
    rows = _specimens(n)
    batch: dict[str, torch.Tensor] = {"labels": torch.zeros(n, 4, dtype=torch.long)}
    if "image" in model.modalities:
        size = cfg.model.image.image_size
        batch["image"] = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    if "dna" in model.modalities:
        enc = model.dna_tokenizer(rows["nucleotides"].tolist())
        batch["dna_ids"], batch["dna_mask"] = (
            torch.from_numpy(enc.ids).long(),
            torch.from_numpy(enc.attention_mask).long(),
        )
    if "text" in model.modalities:
        text = cfg.model.text
        enc = model.text_tokenizer(
            taxonomy_text(rows, text.template, text.missing_word).tolist(), padding=True, return_tensors="pt"
        )
        batch["text_ids"], batch["text_mask"] = enc["input_ids"], enc["attention_mask"]
    return {k: v.to(device) for k, v in batch.items()}


def throughput_results(
    prefix: str,
    workload: str,
    item: str,
    n: int,
    flops: int,
    seconds: dict[str, float],
    matmul_flops: int,
    goals: tuple[Optional[float], Optional[float]],
    how: dict[str, str],
    eager_how: str,
    goal_dtype: str = "bf16",
) -> list[Result]:
    """Two rows per dtype: utilisation (model FLOP/s over matmul FLOP/s of that dtype) and
    samples/s against plain fp32 eager. ``seconds`` holds "eager", "fp32", "bf16",
    "matmul fp32" and "matmul bf16" (per call; a call processes ``n`` items, ``flops`` FLOPs).
    ``goals`` (utilisation, speed-up) are judged on the ``goal_dtype`` rows, the configuration
    we recommend (the issue allows bf16); the other dtype's rows are reported without a goal."""
    eager = n / seconds["eager"]
    best_peak = matmul_flops / min(seconds["matmul fp32"], seconds["matmul bf16"])
    ceiling = best_peak / (flops / seconds["eager"])
    results = []
    for dtype in ("fp32", "bf16"):
        peak = matmul_flops / seconds[f"matmul {dtype}"]
        achieved = flops / seconds[dtype]
        ours = n / seconds[dtype]
        utilisation_goal, speed_goal = goals if dtype == goal_dtype else (None, None)
        results.append(
            Result(
                benchmark=f"{prefix} {dtype}: utilisation",
                workload=workload,
                ours=achieved / 1e9,
                baseline=peak / 1e9,
                unit="GFLOP/s",
                ratio=achieved / peak,
                goal=utilisation_goal,
                note=f"{ours:.3g} {item}/s ({how[dtype]}); baseline: square {dtype} matmul, same process and threads",
            )
        )
        results.append(
            Result(
                benchmark=f"{prefix} {dtype}: vs fp32 eager",
                workload=workload,
                ours=ours,
                baseline=eager,
                unit=f"{item}/s",
                ratio=ours / eager,
                goal=speed_goal,
                note=f"{how[dtype]}; baseline: {eager_how};"
                f" ceiling {ceiling:.2f}x (best matmul FLOP/s / eager model FLOP/s)",
            )
        )
    return results
