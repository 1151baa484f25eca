"""``clibd classify --checkpoint DIR --index INDEX (--images ... | --dna ...) [--k 5]
[--format csv|table] [--out FILE]``.

One row per readable input (unreadable ones are reported on stderr by name): ``id``; per
rank (order, family, genus, species) the predicted name, ``<rank>_similarity`` and
``<rank>_vote_share`` (similarity-weighted vote of the k nearest reference specimens, see
``clibd.index.vote``); ``nearest_id``; ``best_similarity``; ``possible_new_species`` (best
similarity below the threshold calibrated for this query modality when the index was built).
The index must have been built with the same checkpoint (hash and dimension are checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clibd.commands.embed import add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--index", required=True, help="reference index folder from `clibd index build`")
    parser.add_argument("--k", type=int, default=5, help="nearest reference specimens that vote (default 5)")
    parser.add_argument("--format", choices=("csv", "table"), default="csv")
    parser.add_argument("--out", help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    from clibd.index.vote import predict_taxonomy
    from clibd.embed.embedder import Embedder
    from clibd.index.library import load_library
    from clibd.embed.inputs import embed_specimens

    if args.k < 1:
        raise SystemExit(f"clibd classify: --k must be at least 1, got {args.k}")
    embedder = Embedder(args.checkpoint, device=args.device, batch_size=args.batch_size,
                        precision=args.precision, compile=args.compile)
    index = load_library(args.index, embedder)
    emb, ids, modality, skipped = embed_specimens(embedder, args.images, args.dna)
    if not ids:
        print("clibd classify: nothing to classify, every input was skipped", file=sys.stderr)
        return 1
    threshold = index.metadata["thresholds"].get(modality)
    if threshold is None:
        raise SystemExit(f"clibd classify: index {args.index} has no threshold calibrated for {modality} queries")
    scores, positions = index.search(emb, min(args.k, len(index)))
    table = predict_taxonomy(scores, positions, index.taxonomy, index.ids, ids, threshold["threshold"])
    text = table.to_csv(index=False, float_format="%.4f") if args.format == "csv" else table.to_string(index=False) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    print(f"classified {len(table)} specimens ({modality} -> {index.metadata.get('modality')}), skipped {len(skipped)}",
          file=sys.stderr)
    return 0
