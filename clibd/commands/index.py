"""``clibd index build --checkpoint DIR [--config CONFIG] --modality dna|image|text --out INDEX
[--kind flat|ivf|ivfpq|hnsw] [key=value ...]``: a reference library of the config's key specimens
with a calibrated new-species threshold (``clibd.index.library``). ``--kind`` (default: the
config's ``eval.index``) picks the FAISS index; IVF lists and PQ codes are sized from the key
count (``clibd.index.faiss_index``; docs/scale.md for libraries of millions of keys)."""

from __future__ import annotations

import argparse
import json

from clibd.commands.evaluate import add_checkpoint_arguments, resolve_config
from clibd.config import MODALITIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="embed the config's key specimens into a reference library")
    add_checkpoint_arguments(build)
    build.add_argument("--modality", required=True, choices=MODALITIES, help="key embeddings")
    build.add_argument("--out", required=True, help="index folder to write")
    build.add_argument("--kind", default=None, help="flat | ivf | ivfpq | hnsw (default: the config's eval.index)")


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from clibd.index.library import build_library
    from clibd.models.clibd_model import CLIBDModel

    kind = [f"eval.index={args.kind}"] if args.kind else []
    cfg = resolve_config(args.checkpoint, args.config, [*args.overrides, *kind])
    state = PartialState()
    model = CLIBDModel.from_pretrained(args.checkpoint).to(state.device)
    index = build_library(cfg, model, args.modality, args.checkpoint, state)
    if index is not None:  # the main process
        index.save(args.out)
        print(f"{len(index)} {args.modality} keys -> {args.out}")
        skips = index.metadata["quality_skips"]
        if skips:
            print(f"left out by the barcode quality checks (cfg.quality, docs/quality.md): {skips}")
        print("new-species thresholds: " + json.dumps(index.metadata["thresholds"], indent=1))
    return 0
