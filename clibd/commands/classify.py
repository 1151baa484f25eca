"""``clibd classify --checkpoint DIR --index INDEX [--images ...] [--dna ...] [--k 5]
[--format csv|table|json] [--out FILE] [--keep-flagged] [--min-valid-nt 200 ...]``.

One row per specimen (``clibd.index.classify_specimens``): photos and barcodes are matched
by id (file name without extension = barcode id); ``image_file`` / ``dna_file`` /
``dna_record`` say which input records the row comes from, ``evidence`` what its prediction
used (image, dna, image+dna, or empty: withheld), ``quality`` why an input was not used
(``clibd.data.quality``); then per rank (order, family, genus, species) the predicted name,
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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clibd.commands.embed import add_input_arguments, add_quality_arguments, quality_rules

CANDIDATES, MARGIN = 10, 0.1  # clibd.index.identity's defaults (not imported: --help stays fast)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, together=True)
    parser.add_argument("--index", required=True, help="reference index folder from `clibd index build`")
    parser.add_argument("--k", type=int, default=5, help="nearest reference specimens that vote (default 5)")
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


def run(args: argparse.Namespace) -> int:
    from clibd.embed.embedder import Embedder
    from clibd.embed.inputs import embed_inputs
    from clibd.index.classify_specimens import classify_specimens
    from clibd.index.library import load_key_dna, load_library

    if args.k < 1:
        raise SystemExit(f"clibd classify: --k must be at least 1, got {args.k}")
    embedder = Embedder(
        args.checkpoint, device=args.device, batch_size=args.batch_size, precision=args.precision, compile=args.compile
    )
    index = load_library(args.index, embedder)
    try:
        dna = load_key_dna(args.index, index)
        rerank = rerank_settings(args, index.taxonomy["species"])
        orient = dna.strand.orient if dna.strand is not None else None
        inputs = embed_inputs(embedder, args.images, args.dna, quality_rules(args), orient)
        table = classify_specimens(index, inputs, args.k, args.keep_flagged, dna.barcodes, rerank)
    except ValueError as err:  # duplicate ids, a re-rank without barcodes, bad re-rank settings
        raise SystemExit(f"clibd classify: {err}") from None
    skipped = sum(len(i.skipped) for i in inputs.values())
    if table.empty:
        print("clibd classify: nothing to classify, every input was skipped", file=sys.stderr)
        return 1
    if args.format == "csv":
        text = table.to_csv(index=False, float_format="%.4f")
    elif args.format == "json":
        text = table.to_json(orient="records", indent=1, force_ascii=False) + "\n"
    else:
        text = uncertain_shown(table).to_string(index=False) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    withheld = int((table["evidence"] == "").sum())
    reverse = int((table["strand"] == "-").sum())
    print(
        f"classified {len(table) - withheld} of {len(table)} specimens (keys: {index.metadata.get('modality')}), "
        f"withheld {withheld} (see the quality column), unreadable {skipped}"
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


def uncertain_shown(table):
    """For reading: a name withheld below the deepest confident rank (the vote had one) reads ``uncertain``."""
    shown = table.copy()
    for rank in ("order", "family", "genus", "species"):
        withheld = shown[rank].isna() & shown[f"{rank}_vote_share"].notna()
        shown[rank] = shown[rank].astype(object).where(~withheld, "uncertain")
    return shown
