"""``clibd classify --checkpoint DIR --index INDEX [--images ...] [--dna ...] [--k 5]
[--format csv|table|json] [--out FILE] [--keep-flagged] [--min-valid-nt 200 ...]``.

One row per specimen (``clibd.index.classify_specimens``), every input accounted for: photos
and barcodes are matched by id (file name without extension = barcode id); ``image_file`` /
``dna_file`` / ``dna_record`` say which input records the row comes from, ``evidence`` what
its prediction used (image, dna, image+dna, or empty: withheld), ``quality`` why an input was
not used (``clibd.data.quality``; ``unreadable (...)`` for a file or record that could not be
read: it still has its row); then per rank (order, family, genus, species) the predicted name,
``<rank>_similarity`` and ``<rank>_vote_share`` (similarity-weighted vote of the k nearest
reference specimens, see ``clibd.index.vote``); ``nearest_id``; ``best_similarity``;
``possible_new_species`` (best similarity below the threshold calibrated when the index was
built). The index must have been built with the same checkpoint (hash and dimension are checked).

Inputs are read, checked, embedded, searched and written a chunk at a time (``--chunk``):
memory does not grow with the input, and a progress bar runs on stderr. ``--out FILE`` is
written whole or not at all (renamed into place at the end), refused when it holds anything
but an earlier ``clibd classify`` output, and locked against a second writer. ``--format
table`` aligns the columns within each chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from clibd.commands.embed import (
    Notes,
    add_input_arguments,
    add_quality_arguments,
    build_embedder,
    input_chunks,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, together=True)
    parser.add_argument("--index", required=True, help="reference index folder from `clibd index build`")
    parser.add_argument("--k", type=positive_int, default=5, help="nearest reference specimens that vote (default 5)")
    parser.add_argument("--format", choices=("csv", "table", "json"), default="csv")
    parser.add_argument("--out", help="write here instead of stdout")
    add_quality_arguments(parser, "show the predictions of flagged photos (empty_well, blurry, too_small) anyway")


class RowWriter:
    """Rows in ``csv``, ``json`` (one array) or ``table`` format, a chunk at a time."""

    def __init__(self, fmt: str, stream: TextIO) -> None:
        self.fmt, self.stream, self.rows = fmt, stream, 0

    def write(self, table: pd.DataFrame) -> None:
        first = self.rows == 0
        if self.fmt == "csv":
            table.to_csv(self.stream, index=False, header=first, float_format="%.4f")
        elif self.fmt == "json":
            body = table.to_json(orient="records", indent=1, force_ascii=False).strip()[1:-1].strip("\n")
            if body:
                self.stream.write(("[\n" if first else ",\n") + body)
        else:
            self.stream.write(table.to_string(index=False, header=first) + "\n")
        self.rows += len(table)

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.rows else "[]\n")


def is_classify_output(path: Path) -> bool:
    """Whether ``path`` looks like an earlier ``clibd classify`` output (csv, table or json)."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16).decode("utf-8", errors="replace")
    except OSError:
        return False
    first = head.split("\n", 1)[0]
    return (first.lstrip().startswith("id") and "evidence" in first) or (
        head.startswith("[") and ('"evidence"' in head or head.strip() == "[]")
    )


def run(args: argparse.Namespace) -> int:
    from clibd.atomic import atomic_file_output
    from clibd.index.classify_specimens import search_specimens
    from clibd.index.library import load_library

    if args.images is None and args.dna is None:
        raise SystemExit("clibd classify: give --images, --dna or both")
    embedder = build_embedder(args)
    index = load_library(args.index, embedder)
    notes = Notes("clibd classify")
    counts = {"rows": 0, "withheld": 0, "unreadable": 0}

    def classify_into(stream: TextIO) -> None:
        writer = RowWriter(args.format, stream)
        for inputs in input_chunks(args, embedder, "clibd classify"):
            for given in inputs.values():
                notes.unreadable(given.records)
                counts["unreadable"] += int(given.unreadable.sum())
            table = search_specimens(index, inputs, args.k, args.keep_flagged).table
            writer.write(table)
            counts["rows"] += len(table)
            counts["withheld"] += int((table["evidence"] == "").sum())
        writer.close()

    if args.out:
        with atomic_file_output(args.out, "clibd classify", is_classify_output) as tmp:
            with tmp.open("w", encoding="utf-8", newline="") as stream:
                classify_into(stream)
    else:
        classify_into(sys.stdout)
    notes.close()
    rows, withheld = counts["rows"], counts["withheld"]
    print(
        f"classified {rows - withheld} of {rows} specimens (keys: {index.metadata.get('modality')}), "
        f"withheld {withheld} (see the quality column), unreadable {counts['unreadable']}",
        file=sys.stderr,
    )
    return 0
