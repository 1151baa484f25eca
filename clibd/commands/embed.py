"""``clibd embed --checkpoint DIR (--images FILES/DIRS | --dna FASTA/CSV/TSV) --out FILE``.

``FILE.parquet``: columns ``id`` (string) and ``embedding`` (fixed-size list of float32);
``FILE.npy``: the ``[N, D]`` float32 array, with the ids one per line in ``FILE.ids.txt``.
Unreadable inputs are reported on stderr by name and left out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model directory written by save_pretrained")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", nargs="+", metavar="FILE_OR_DIR", help="image files and/or folders of images")
    inputs.add_argument("--dna", nargs="+", metavar="FILE", help="barcodes: FASTA, CSV or TSV files")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    add_speed_arguments(parser)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on a CUDA GPU, fp32 on a CPU; bf16 on a CPU pays with AVX512-BF16 or AMX")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile with frozen weights: ~15-30 s to start, faster on thousands of specimens")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, help="output .parquet or .npy file")


def write_embeddings(path: Path, emb: np.ndarray, ids: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, emb)
        path.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids))
    elif path.suffix == ".parquet":
        flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).ravel())
        vectors = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
        pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "embedding": vectors}), path)
    else:
        raise ValueError(f"--out must end in .parquet or .npy, got {path}")


def run(args: argparse.Namespace) -> int:
    from clibd.embed.embedder import Embedder
    from clibd.embed.inputs import embed_specimens

    out = Path(args.out)
    if out.suffix not in (".parquet", ".npy"):
        raise SystemExit(f"clibd embed: --out must end in .parquet or .npy, got {out}")
    embedder = Embedder(args.checkpoint, device=args.device, batch_size=args.batch_size,
                        precision=args.precision, compile=args.compile)
    emb, ids, _, skipped = embed_specimens(embedder, args.images, args.dna)
    write_embeddings(out, emb, ids)
    print(f"embedded {len(ids)} specimens ({emb.shape[1]}-d), skipped {len(skipped)}: {out}")
    return 0
