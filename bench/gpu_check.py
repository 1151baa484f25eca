"""One-shot GPU check (``make gpu-check``): proves the GPU paths and measures them in minutes.

Rows: the paper-config training step (ViT-B/16 + 12-layer 768-d DNA tower + bert-small-size
text, random init, all three pairs) at 500 per GPU in bf16, eager and compiled (steps/s,
samples/s, MFU = FLOPs of one step counted by torch's FlopCounterMode / step time / the
device's dense bf16 peak from PEAK_BF16, peak memory); the image loader with augmentation on
the device (clibd/data/gpu_augment.py) against the per-image CPU PIL pipeline; the bf16
InferenceEncoder (images/s, barcodes/s); FAISS exact and IVF search of 370 k x 2.4 M x 768
synthetic clustered embeddings, against the fp32 matmul bound measured on the same device.
Writes bench/gpu_results.json and prints one table.

``--dry-run`` runs the same code at tiny sizes on the CPU (tests/test_gpu_check.py), with
torch.compile's ``eager`` backend so it takes seconds; nothing from it is a measurement.
FAISS's multi-GPU sharding (``index_cpu_to_all_gpus``) needs a GPU and is not exercised there.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench.common import REPO  # noqa: E402
from bench.compute import OFFLINE, PAPER_CONFIG, autocast, build_model, sync, synthetic_batch  # noqa: E402
from bench.train_step import make_step  # noqa: E402
from clibd.config import AugmentConfig, DataConfig, load_config  # noqa: E402
from clibd.data.gpu_augment import BatchAugment  # noqa: E402
from clibd.data.transforms import build_normalize, build_pil_transform, decode_image, decode_side  # noqa: E402
from clibd.embed.encoder import InferenceEncoder  # noqa: E402
from clibd.index.faiss_index import ReferenceIndex  # noqa: E402
from clibd.train.loss import ContrastiveLoss  # noqa: E402
from clibd.train.optim import param_groups  # noqa: E402

# Dense bf16 tensor-core peak (FLOP/s, no sparsity) by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


@dataclass
class Sizes:
    batch: int  # training batch per GPU
    steps: int  # timed training steps per variant
    loader_batch: int
    embed_batch: int
    queries: int
    keys: int
    dim: int
    clusters: int
    recall_queries: int  # queries scored against exact search to pick nprobe


FULL = Sizes(500, 10, 500, 512, 370_000, 2_400_000, 768, 20_000, 5_000)
DRY = Sizes(4, 2, 8, 4, 500, 5_000, 32, 50, 200)
DRY_OVERRIDES = [  # the paper config shrunk so the same code runs in seconds on a CPU
    "model.embed_dim=32",
    "model.image.name=vit_tiny_patch16_224",
    "model.image.image_size=32",
    "model.dna.hidden_size=32",
    "model.dna.num_layers=1",
    "model.dna.num_heads=2",
    "model.dna.intermediate_size=64",
    "model.text.hidden_size=32",
    "model.text.num_layers=1",
    "model.text.num_heads=2",
    "model.text.intermediate_size=64",
]


def _timed(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Seconds per call, after one untimed call (warm-up, compilation)."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def _peak_memory_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def device_peak(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def check_training(device: torch.device, sizes: Sizes, dry: bool) -> list[dict]:
    cfg = load_config(PAPER_CONFIG, [*OFFLINE, *(DRY_OVERRIDES if dry else [])])
    rows = []
    for compiled in (False, True):
        model = build_model(cfg).to(device).train()
        batch = synthetic_batch(model, cfg, sizes.batch, device)
        optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5, fused=True)
        step = make_step(model, batch, device, bf16=True, optimizer=optimizer)
        flops = _step_flops(model, batch, device)
        if compiled:
            model.compile(backend="eager" if dry else "inductor")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        step()  # compiles on the compiled pass
        warm = time.perf_counter() - start
        seconds = _timed(step, device, sizes.steps)
        peak = device_peak(device)
        rows.append(
            {
                "check": f"train paper config bf16 {'compiled' if compiled else 'eager'}",
                "steps/s": 1 / seconds,
                "samples/s": sizes.batch / seconds,
                "tflop_per_step": flops / 1e12,
                "mfu": None if peak is None else flops / seconds / peak,
                "peak_bf16_tflops": None if peak is None else peak / 1e12,
                "peak_memory_gib": _peak_memory_gib(device),
                "first_step_s": warm,
            }
        )
        del model, batch, optimizer, step
    return rows


def _step_flops(model: torch.nn.Module, batch: dict, device: torch.device) -> int:
    """FLOPs of forward + backward (the optimizer's are negligible), counted once in eager mode."""
    with FlopCounterMode(display=False) as counter, autocast(device, True):
        loss, _ = ContrastiveLoss()(*model(batch), batch["labels"])
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _jpegs(n: int, seed: int = 0) -> list[bytes]:
    """BIOSCAN-like 341x256 JPEGs (the cropped_256 package's shape) of smooth random colour."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(min(n, 16)):  # 16 distinct files, reused: decoding cost does not depend on content
        small = rng.integers(0, 256, (8, 11, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((341, 256), Image.BILINEAR).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return [out[i % len(out)] for i in range(n)]


def check_loader(device: torch.device, sizes: Sizes, image_size: int) -> list[dict]:
    """One batch from JPEG bytes to normalised images on the device, in one process:
    CPU pipeline (decode + per-image PIL augmentation + normalise, then transfer) against
    decode + fixed crop on the CPU, then BatchAugment on the device."""
    data, augment = DataConfig(), AugmentConfig()
    files, side = _jpegs(sizes.loader_batch), decode_side(image_size, augment)
    cpu_transform, normalize = build_pil_transform(image_size, augment), build_normalize(data.mean, data.std)
    fixed = build_pil_transform(side)
    on_device = BatchAugment(image_size, augment, data.mean, data.std).to(device)

    def cpu_pipeline() -> torch.Tensor:
        images = torch.stack([cpu_transform(decode_image(f, "bench", side)) for f in files])
        return normalize(images).to(device)

    def device_pipeline() -> torch.Tensor:
        return on_device(torch.stack([fixed(decode_image(f, "bench", side)) for f in files]).to(device))

    cpu_s, dev_s = _timed(cpu_pipeline, device, 2), _timed(device_pipeline, device, 2)
    return [{"check": "loader: CPU PIL pipeline", "samples/s": sizes.loader_batch / cpu_s},
            {"check": "loader: augmentation on device", "samples/s": sizes.loader_batch / dev_s,
             "ratio_to_cpu_pipeline": cpu_s / dev_s}]  # fmt: skip


def check_embedding(device: torch.device, sizes: Sizes, dry: bool) -> list[dict]:
    cfg = load_config(PAPER_CONFIG, [*OFFLINE, *(DRY_OVERRIDES if dry else []), "model.text.enabled=false"])
    model = build_model(cfg).to(device).eval()
    batch = synthetic_batch(model, cfg, sizes.embed_batch, device)
    encoder = InferenceEncoder(model, device, precision="bf16")
    rows = []
    for modality, unit in (("image", "images/s"), ("dna", "barcodes/s")):
        seconds = _timed(lambda m=modality: encoder(batch, m), device, 3)
        rows.append({"check": f"embed {modality} bf16 InferenceEncoder", unit: sizes.embed_batch / seconds})
    return rows


def clustered(n: int, sizes: Sizes, seed: int) -> np.ndarray:
    """Unit vectors around ``sizes.clusters`` centres (species), generated on the device in chunks."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(sizes.clusters, sizes.dim, generator=g)
    g.manual_seed(seed)
    labels = torch.randint(sizes.clusters, (n,), generator=g)
    x = centres[labels] + 0.5 * torch.randn(n, sizes.dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1).numpy()


def _matmul_bound_seconds(keys: np.ndarray, queries: np.ndarray, device: torch.device) -> float:
    """The matmul bound: one fp32 similarity block (float32 as FAISS's flat index) timed, scaled to the whole search."""
    k_dev = torch.from_numpy(keys).to(device)
    q_block = torch.from_numpy(queries[:8192]).to(device)
    block_s = _timed(lambda: (q_block @ k_dev.T).max(dim=1), device, 2)
    return block_s * len(queries) / len(q_block)


def check_search(device: torch.device, sizes: Sizes) -> list[dict]:
    keys, queries = clustered(sizes.keys, sizes, 1), clustered(sizes.queries, sizes, 2)
    ids = np.arange(sizes.keys).astype(str)
    faiss_device = "cuda" if device.type == "cuda" else "cpu"
    bound_s = _matmul_bound_seconds(keys, queries, device)
    exact = ReferenceIndex(sizes.dim, "flat", device=faiss_device)
    exact.add(keys, ids)
    start = time.perf_counter()
    _, truth = exact.search(queries, 1)
    exact_s = time.perf_counter() - start
    rows = [{"check": "search exact flat", "seconds": exact_s, "queries/s": sizes.queries / exact_s,
             "matmul_bound_s": bound_s, "ratio_to_matmul_bound": exact_s / bound_s, "recall@1": 1.0}]  # fmt: skip
    del exact
    start = time.perf_counter()
    ivf = ReferenceIndex(sizes.dim, "ivf", device=faiss_device)
    ivf.add(keys, ids)
    build_s = time.perf_counter() - start
    probe = queries[: sizes.recall_queries]
    for nprobe in (8, 16, 32, 64, 128, 256, 512):  # the smallest nprobe with recall@1 >= 0.99
        ivf.nprobe = min(nprobe, ivf.nlist)
        recall = float((ivf.search(probe, 1)[1][:, 0] == truth[: len(probe), 0]).mean())
        if recall >= 0.99 or ivf.nprobe == ivf.nlist:
            break
    start = time.perf_counter()
    _, got = ivf.search(queries, 1)
    ivf_s = time.perf_counter() - start
    recall = float((got[:, 0] == truth[:, 0]).mean())
    rows.append({"check": f"search ivf nlist={ivf.nlist} nprobe={ivf.nprobe}", "seconds": ivf_s,
                 "queries/s": sizes.queries / ivf_s, "build_s": build_s, "matmul_bound_s": bound_s,
                 "ratio_to_matmul_bound": ivf_s / bound_s, "recall@1": recall})  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    columns = sorted({key for row in rows for key in row if key != "check"})
    header = ["check", *columns]

    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    table = [header, *[[cell(row.get(c)) for c in header] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default bench/gpu_results.json)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible to torch; --dry-run runs the check at tiny sizes on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else FULL
    out = args.out or REPO / "bench" / ("gpu_results_dry_run.json" if args.dry_run else "gpu_results.json")
    start = time.perf_counter()
    rows = check_training(device, sizes, args.dry_run)
    rows += check_loader(device, sizes, 32 if args.dry_run else 224)
    rows += check_embedding(device, sizes, args.dry_run)
    rows += check_search(device, sizes)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    print_table(rows)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['device']}: {report['seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
