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
built). Unreadable files are reported on stderr by name. The index must have been built
with the same checkpoint (hash and dimension are checked).

Barcodes (docs/identify.md): each is put on the library's strand before it is embedded
(``strand``: ``+`` as given, ``-`` reverse-complemented; ``clibd.index.strand``); every DNA hit
gets its % ``identity`` and ``overlap`` (per rank: ``<rank>_identity``, the mean over the keys that
voted for the name); ``--rerank identity`` re-ranks the embedding search's ``--candidates``
nearest keys by identity (``clibd.index.identity``) and judges those rows by the identity rules.
Each row stops at its ``deepest_confident_rank``: the names below it are withheld (empty in csv /
json, ``uncertain`` in the table), their similarity and vote share kept.

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

CANDIDATES, MARGIN = 10, 0.1  # clibd.index.identity's defaults (not imported: --help stays fast)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, together=True)
    parser.add_argument("--index", required=True, help="reference index folder from `clibd index build`")
    parser.add_argument("--k", type=positive_int, default=5, help="nearest reference specimens that vote (default 5)")
    parser.add_argument("--format", choices=("csv", "table", "json"), default="csv")
    parser.add_argument("--out", help="write here instead of stdout")
    add_quality_arguments(parser, "show the predictions of flagged photos (empty_well, blurry, too_small) anyway")
    add_rerank_arguments(parser)


def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    rerank = parser.add_argument_group("re-rank barcode hits by % identity (docs/identify.md)")
    rerank.add_argument("--rerank", choices=("identity",), help="re-rank the embedding's nearest keys by % identity")
    rerank.add_argument("--candidates", type=int, default=CANDIDATES, help="keys re-ranked (default %(default)s)")
    rerank.add_argument(
        "--margin", type=float, default=MARGIN, help="re-rank keys within this cosine of the nearest (%(default)s)"
    )


def rerank_settings(args: argparse.Namespace, species):
    """The ``Rerank`` of ``--rerank identity`` over a library's key species, or None."""
    from clibd.index.identity import Rerank

    return Rerank.for_library(species, args.candidates, args.margin) if args.rerank else None


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
    from clibd.index.library import load_key_dna, load_library

    if args.images is None and args.dna is None:
        raise SystemExit("clibd classify: give --images, --dna or both")
    embedder = build_embedder(args)
    index = load_library(args.index, embedder)
    dna = load_key_dna(args.index, index)
    rerank = rerank_settings(args, index.taxonomy["species"])
    orient = dna.strand.orient if dna.strand is not None else None
    notes = Notes("clibd classify")
    counts = {"rows": 0, "withheld": 0, "unreadable": 0, "reverse": 0}

    def classify_into(stream: TextIO) -> None:
        writer = RowWriter(args.format, stream)
        for inputs in input_chunks(args, embedder, "clibd classify", orient):
            for given in inputs.values():
                notes.unreadable(given.records)
                counts["unreadable"] += int(given.unreadable.sum())
            table = search_specimens(index, inputs, args.k, args.keep_flagged, dna.barcodes, rerank).table
            writer.write(uncertain_shown(table) if args.format == "table" else table)
            counts["rows"] += len(table)
            counts["withheld"] += int((table["evidence"] == "").sum())
            counts["reverse"] += int((table["strand"] == "-").sum())
        writer.close()

    if args.out:
        with atomic_file_output(args.out, "clibd classify", is_classify_output) as tmp:
            with tmp.open("w", encoding="utf-8", newline="") as stream:
                classify_into(stream)
    else:
        classify_into(sys.stdout)
    notes.close()
    rows, withheld, reverse = counts["rows"], counts["withheld"], counts["reverse"]
    print(
        f"classified {rows - withheld} of {rows} specimens (keys: {index.metadata.get('modality')}), "
        f"withheld {withheld} (see the quality column), unreadable {counts['unreadable']}"
        + (f"; {reverse} barcodes read on the other strand were reverse-complemented" if reverse else ""),
        file=sys.stderr,
    )
    calibrated_k = index.metadata.get("calibration", {}).get("k", args.k)
    if calibrated_k != args.k:
        print(f"the library's rank rules were calibrated for --k {calibrated_k}, not {args.k}", file=sys.stderr)
    for kind, reason in index.metadata.get("calibration", {}).get("not_calibrated", {}).items():
        print(
            f"the library is not calibrated for {kind} queries ({reason}): no flag, no confident rank", file=sys.stderr
        )
    return 0


def uncertain_shown(table: pd.DataFrame) -> pd.DataFrame:
    """For reading: a name withheld below the deepest confident rank (the vote had one) reads ``uncertain``."""
    shown = table.copy()
    for rank in ("order", "family", "genus", "species"):
        withheld = shown[rank].isna() & shown[f"{rank}_vote_share"].notna()
        shown[rank] = shown[rank].astype(object).where(~withheld, "uncertain")
    return shown
