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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clibd.commands.embed import add_input_arguments, add_quality_arguments, input_modalities, quality_rules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, together=True)
    parser.add_argument("--index", required=True, help="reference index folder from `clibd index build`")
    parser.add_argument("--k", type=int, default=5, help="nearest reference specimens that vote (default 5)")
    parser.add_argument("--format", choices=("csv", "table", "json"), default="csv")
    parser.add_argument("--out", help="write here instead of stdout")
    add_quality_arguments(parser, "show the predictions of flagged photos (empty_well, blurry, too_small) anyway")


def run(args: argparse.Namespace) -> int:
    from clibd.embed.embedder import Embedder
    from clibd.embed.inputs import embed_inputs
    from clibd.index.classify_specimens import classify_specimens
    from clibd.index.library import load_library

    if args.k < 1:
        raise SystemExit(f"clibd classify: --k must be at least 1, got {args.k}")
    embedder = Embedder(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
        modalities=input_modalities(args),
    )
    index = load_library(args.index, embedder)
    try:
        inputs = embed_inputs(embedder, args.images, args.dna, quality_rules(args))
        table = classify_specimens(index, inputs, args.k, args.keep_flagged)
    except ValueError as err:  # duplicate ids, a threshold the index lacks
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
        text = table.to_string(index=False) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    withheld = int((table["evidence"] == "").sum())
    print(
        f"classified {len(table) - withheld} of {len(table)} specimens (keys: {index.metadata.get('modality')}), "
        f"withheld {withheld} (see the quality column), unreadable {skipped}",
        file=sys.stderr,
    )
    return 0
