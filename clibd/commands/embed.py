"""``clibd embed --checkpoint DIR (--images FILES/DIRS | --dna FASTA/CSV/TSV) --out FILE``.

Inputs are read, checked, embedded and written a chunk at a time (memory does not grow with
the input; a progress bar on stderr). ``FILE.parquet``: one row per input record, columns
``id`` (string), ``file``, ``record``, ``quality`` and ``embedding`` (fixed-size list of
float32; null where the input was not embedded: unreadable, failed its quality checks
(``clibd.data.quality``), or a flagged photo without ``--keep-flagged``; ``quality`` says
why). ``FILE.npy``: the ``[N, D]`` float32 array of the embedded rows, their ids one per line
in ``FILE.ids.txt`` (and ``FILE.manifest.json``); the inputs left out are named on stderr.
Both are written whole or not at all (``clibd.embed.embedding_files``); a second writer to
the same ``--out`` fails at once, and an ``--out`` that is not an earlier ``clibd embed``
output is refused.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, get_args

import numpy as np
import pandas as pd

from clibd.config import Precision, QualityConfig

if TYPE_CHECKING:
    from clibd.embed.inputs import Orient

MAX_NAMED = 20  # inputs named one per line on stderr; the rest are counted


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a batch size, a k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_input_arguments(parser: argparse.ArgumentParser, together: bool = False) -> None:
    """``--images`` / ``--dna``: one of them, or (``together``) either or both."""
    parser.add_argument("--checkpoint", required=True, help="model directory written by save_pretrained")
    inputs = parser.add_argument_group("inputs") if together else parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument(
        "--images", nargs="+", metavar="FILE_OR_DIR", help="image files and/or folders of images (any format PIL opens)"
    )
    inputs.add_argument("--dna", nargs="+", metavar="FILE", help="barcodes: FASTA, CSV, TSV or parquet files")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--chunk", type=positive_int, default=None, help="records read, embedded and written together (default 4096)"
    )
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


def build_embedder(args: argparse.Namespace):
    from clibd.embed.embedder import Embedder

    return Embedder(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
        modalities=input_modalities(args),
    )


def input_chunks(args: argparse.Namespace, embedder, command: str, orient: Optional[Orient] = None) -> Iterator[dict]:
    """The inputs of ``--images`` / ``--dna`` a chunk at a time (``clibd.embed.inputs.specimen_chunks``;
    ``orient``: put barcodes on a library's strand) under a progress bar; the files a folder held that
    are not images are named on stderr."""
    from clibd.embed.inputs import specimen_chunks
    from clibd.embed.records import CHUNK_RECORDS, count_records, photo_files
    from clibd.progress import progress

    photos, ignored = photo_files(args.images) if args.images is not None else (None, [])
    if ignored:
        shown = ", ".join(map(str, ignored[:5])) + (", ..." if len(ignored) > 5 else "")
        print(f"{command}: ignored {len(ignored)} files that are no image format PIL opens: {shown}", file=sys.stderr)
    if args.images is not None and not photos and args.dna is None:
        raise SystemExit(f"{command}: nothing to do: no image files in {' '.join(args.images)}")
    total = len(photos or []) + (count_records(args.dna) if args.dna is not None else 0)
    chunk = args.chunk or CHUNK_RECORDS
    bar = progress(total=total, desc=command, every=max(chunk, total // 20))
    for inputs in specimen_chunks(embedder, photos, args.dna, quality_rules(args), chunk, orient):
        yield inputs
        bar.update(max(len(i.records) for i in inputs.values()))
    bar.close()


class Notes:
    """Lines on stderr naming inputs, the first ``MAX_NAMED`` of them; the rest are counted at the end."""

    def __init__(self, command: str) -> None:
        self.command, self.count = command, 0

    def say(self, line: str) -> None:
        if self.count < MAX_NAMED:
            print(f"{self.command}: {line}", file=sys.stderr)
        self.count += 1

    def unreadable(self, records) -> None:
        """``FILE[ record N]: unreadable (why)`` for each unreadable input of a chunk."""
        bad = records[records["quality"].str.startswith("unreadable")]
        for file, record, quality in zip(bad["file"], bad["record"].astype("Int64"), bad["quality"]):
            self.say(f"{file}: {quality}" if record is pd.NA or record == 1 else f"{file} record {record}: {quality}")

    def close(self) -> None:
        if self.count > MAX_NAMED:
            print(f"{self.command}: ... and {self.count - MAX_NAMED} more (see the quality column)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from clibd.atomic import check_replaceable, output_lock
    from clibd.embed.embedding_files import SUFFIXES, EmbeddingWriter, is_embed_output

    out = Path(args.out)
    if out.suffix not in SUFFIXES:
        raise SystemExit(f"clibd embed: --out must end in .parquet or .npy, got {out}")
    with output_lock(out):
        check_replaceable(out, "", "clibd embed", is_embed_output, folder=False)
        embedder = build_embedder(args)
        reasons: Counter = Counter()
        notes, embedded = Notes("clibd embed"), 0
        with EmbeddingWriter(out, embedder.dim, embedder.checkpoint_hash) as writer:
            for (inputs,) in (chunk.values() for chunk in input_chunks(args, embedder, "clibd embed")):
                records = inputs.records
                keep = (records["quality"] == "").to_numpy(bool)
                if args.keep_flagged and inputs.modality == "image":
                    keep |= np.isfinite(inputs.embeddings).all(axis=1)
                notes.unreadable(records)
                for name, reason in zip(records.loc[~keep, "id"], records.loc[~keep, "quality"]):
                    if not reason.startswith("unreadable"):
                        notes.say(f"left out {name}: {reason}")
                reasons.update(q.split(" (")[0] for q in records.loc[~keep, "quality"])
                writer.write(records, inputs.embeddings, keep)
                embedded += int(keep.sum())
        notes.close()
    print(f"embedded {embedded} specimens ({embedder.dim}-d), left out {sum(reasons.values())} {dict(reasons)}: {out}")
    return 0
