"""``clibd embed --checkpoint DIR (--images FILES/DIRS | --dna FASTA/CSV/TSV) --out FILE``.

``FILE.parquet``: columns ``id`` (string), ``file``, ``record``, ``quality`` and ``embedding``
(fixed-size list of float32); ``FILE.npy``: the ``[N, D]`` float32 array, with the ids one
per line in ``FILE.ids.txt``. Unreadable inputs are reported on stderr by name and left out;
so are barcodes and photos that fail their quality checks (``clibd.data.quality``, counted
by reason; ``--keep-flagged`` keeps flagged photos, with their ``quality``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from clibd.config import Precision, QualityConfig


def add_input_arguments(parser: argparse.ArgumentParser, together: bool = False) -> None:
    """``--images`` / ``--dna``: one of them, or (``together``) either or both."""
    parser.add_argument("--checkpoint", required=True, help="model directory written by save_pretrained")
    inputs = parser.add_argument_group("inputs") if together else parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--images", nargs="+", metavar="FILE_OR_DIR", help="image files and/or folders of images")
    inputs.add_argument("--dna", nargs="+", metavar="FILE", help="barcodes: FASTA, CSV, TSV or parquet files")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    add_speed_arguments(parser)


def input_modalities(args: argparse.Namespace) -> tuple[str, ...]:
    """The towers the given inputs need: the Embedder loads only these, and only their libraries."""
    return tuple(m for m, given in (("image", args.images), ("dna", args.dna)) if given is not None)


# The QualityConfig minimums a command line can set, each as --field-name, with its help.
QUALITY_OPTIONS = {
    "min_valid_nt": "fewest A/C/G/T in a barcode (default {}; BOLD BARCODE standard: 500)",
    "max_ambiguous": "largest share of N and other IUPAC codes (default {}; BARCODE: 0.01)",
    "min_object_contrast": "photo: grey levels the specimen stands out (default {})",
    "min_focus_ratio": "photo: specimen edge over well-highlight sharpness (default {})",
}


def add_quality_arguments(parser: argparse.ArgumentParser, keep_help: str) -> None:
    """The minimums of ``clibd.config.QualityConfig`` (docs/quality.md), and ``--keep-flagged``."""
    rules = QualityConfig()
    group = parser.add_argument_group("quality checks (docs/quality.md)")
    for field, text in QUALITY_OPTIONS.items():
        default = getattr(rules, field)
        option = f"--{field.replace('_', '-')}"
        group.add_argument(option, type=type(default), default=default, help=text.format(default))
    group.add_argument("--keep-flagged", action="store_true", help=keep_help)


def quality_rules(args: argparse.Namespace) -> QualityConfig:
    return QualityConfig(**{field: getattr(args, field) for field in QUALITY_OPTIONS})


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=get_args(Precision),
        default="auto",
        help="auto: bf16 on a CUDA GPU, fp32 on a CPU; bf16 on a CPU pays with AVX512-BF16 or AMX",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile with frozen weights: ~15-30 s to start, faster on thousands of specimens",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, help="output .parquet or .npy file")
    add_quality_arguments(parser, "also write the embeddings of flagged photos (their quality says why)")


def write_embeddings(path: Path, emb: np.ndarray, records: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = records["id"].astype(str).tolist()
    if path.suffix == ".npy":
        np.save(path, emb)
        path.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids))
    elif path.suffix == ".parquet":
        flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).ravel())
        vectors = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
        columns = {
            "id": pa.array(ids, pa.string()),
            "file": pa.array(records["file"].astype(str).tolist()),
            "record": pa.array(records["record"].astype(int).tolist(), pa.int64()),
            "quality": pa.array(records["quality"].astype(str).tolist()),
            "embedding": vectors,
        }
        pq.write_table(pa.table(columns), path)
    else:
        raise ValueError(f"--out must end in .parquet or .npy, got {path}")


def run(args: argparse.Namespace) -> int:
    from clibd.embed.embedder import Embedder
    from clibd.embed.inputs import embed_inputs

    out = Path(args.out)
    if out.suffix not in (".parquet", ".npy"):
        raise SystemExit(f"clibd embed: --out must end in .parquet or .npy, got {out}")
    embedder = Embedder(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
        modalities=input_modalities(args),
    )
    try:
        (inputs,) = embed_inputs(embedder, args.images, args.dna, quality_rules(args)).values()
    except ValueError as err:  # duplicate ids
        raise SystemExit(f"clibd embed: {err}") from None
    records = inputs.records
    keep = (records["quality"] == "").to_numpy(bool) | (args.keep_flagged and inputs.modality == "image")
    for name, reason in zip(records.loc[~keep, "id"], records.loc[~keep, "quality"]):
        print(f"left out {name}: {reason}", file=sys.stderr)
    write_embeddings(out, inputs.embeddings[keep], records[keep])
    reasons = Counter(q.split(" (")[0] for q in records.loc[~keep, "quality"])
    print(
        f"embedded {int(keep.sum())} specimens ({embedder.dim}-d), unreadable {len(inputs.skipped)}, "
        f"left out by quality {int((~keep).sum())} {dict(reasons)}: {out}"
    )
    return 0
