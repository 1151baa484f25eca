"""``clibd index build --checkpoint DIR [--config CONFIG] --modality dna|image|text --out INDEX
[--kind flat|ivf|ivfpq|hnsw] [key=value ...]``: a reference library of the config's key specimens
with a calibrated new-species threshold (``clibd.index.library``). ``--kind`` (default: the
config's ``eval.index``) picks the FAISS index; IVF lists and PQ codes are sized from the key
count (``clibd.index.faiss_index``; docs/scale.md for libraries of millions of keys).

``--out`` is written whole or not at all (``clibd.atomic.atomic_output``): a second build to the
same folder fails at once, a folder holding anything but an earlier library is refused, and the
new library replaces the old one in one rename after its manifest is written."""

from __future__ import annotations

import argparse
import contextlib
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

    from clibd.atomic import atomic_output
    from clibd.index.faiss_index import MANIFEST_KIND
    from clibd.index.library import build_library
    from clibd.models.clibd_model import CLIBDModel

    kind = [f"eval.index={args.kind}"] if args.kind else []
    cfg = resolve_config(args.checkpoint, args.config, [*args.overrides, *kind])
    state = PartialState()
    # The main process writes: locked, refused over anything but a library, swapped in whole at the end.
    output = atomic_output(args.out, MANIFEST_KIND, "clibd index build")
    with output if state.is_main_process else contextlib.nullcontext() as folder:
        model = CLIBDModel.from_pretrained(args.checkpoint).to(state.device)
        index = build_library(cfg, model, args.modality, args.checkpoint, state)
        if index is not None:  # the main process
            index.save(folder)
    if index is not None:
        print(f"{len(index)} {args.modality} keys -> {args.out}")
        skips = index.metadata["quality_skips"]
        if skips:
            print(f"left out by the barcode quality checks (cfg.quality, docs/quality.md): {skips}")
        print("new-species thresholds: " + json.dumps(index.metadata["thresholds"], indent=1))
    return 0
