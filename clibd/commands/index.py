"""``clibd index build`` and ``clibd index info``: reference libraries (docs/identify.md).

``clibd index build --checkpoint DIR --from TABLE [--images DIR] --modality dna|image --out LIB
[--seed 0] [--kind ...] [key=value ...]``: a library of every usable row of any labelled table
(a BOLD TSV / CSV, a BOLD data package, a FASTA with taxonomy in its headers, a parquet, the
BIOSCAN-5M metadata), calibrated on a seeded hold-out of its own species
(``clibd.index.table_library``).

``clibd index build --checkpoint DIR [--config CONFIG] --modality dna|image|text --out LIB
[--kind auto|flat|ivf|ivfpq|hnsw] [key=value ...]``: a library of the config's key specimens, calibrated
on its validation queries (``clibd.index.library``). ``--kind`` (default: the config's
``eval.index``) picks the FAISS index; IVF lists and PQ codes are sized from the key count
(``clibd.index.faiss_index``; docs/scale.md for libraries of millions of keys).

``clibd index info LIB``: where a library came from (file, rows, checksum, checkpoint hash), what
was skipped and why, the rows put on the other strand, and its calibration: the new-species
thresholds and each rank's rule with its balanced accuracy on the hold-out.

``--out`` is written whole or not at all (``clibd.atomic.atomic_output``): a second build to the
same folder fails at once, a folder holding anything but an earlier library is refused, and the
new library replaces the old one in one rename after its manifest is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from clibd.commands.evaluate import add_checkpoint_arguments, resolve_config
from clibd.config import MODALITIES, load_config

RANKS = ("order", "family", "genus", "species")  # printed in this order
REPORTED = (  # metadata entries printed when present, and what they are
    ("quality_skips", "left out by the barcode quality checks (cfg.quality, docs/quality.md)"),
    ("skipped", "skipped rows, by reason"),
    ("reverse_strand", "rows put on the other strand"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="embed labelled specimens into a calibrated reference library")
    add_checkpoint_arguments(build)
    build.add_argument("--modality", required=True, choices=MODALITIES, help="key embeddings")
    build.add_argument("--out", required=True, help="library folder to write")
    build.add_argument(
        "--kind", default=None, help="auto | flat | ivf | ivfpq | hnsw (default: the config's eval.index, auto)"
    )
    build.add_argument(
        "--from",
        dest="table",
        metavar="TABLE",
        help="any labelled table (BOLD TSV/CSV, BOLD data package, FASTA with taxonomy headers, parquet, BIOSCAN-5M "
        "metadata): every usable row is a key, calibrated on a seeded hold-out of its own species",
    )
    build.add_argument("--images", metavar="DIR", help="with --from: photos named <processid>.jpg (any depth)")
    build.add_argument("--seed", type=int, default=0, help="with --from: the seed of the calibration hold-out")
    info = actions.add_parser("info", help="where a library came from and how well it is calibrated")
    info.add_argument("library", help="library folder")


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        return _info(Path(args.library))
    if args.images and not args.table:
        raise SystemExit("clibd index build: --images goes with --from TABLE")
    from accelerate import PartialState

    from clibd.atomic import atomic_output
    from clibd.embed.run_dir import find_run_config
    from clibd.index.faiss_index import MANIFEST_KIND
    from clibd.index.library import build_library
    from clibd.index.table_library import build_table_library
    from clibd.models.clibd_model import CLIBDModel

    kind = [f"eval.index={args.kind}"] if args.kind else []
    if args.table:  # the run's config for how to embed (image view, batch size); the data come from TABLE
        path = args.config or find_run_config(args.checkpoint)
        cfg = load_config(path, [*args.overrides, *kind, "data.bad_records=skip"])
    else:
        cfg = resolve_config(args.checkpoint, args.config, [*args.overrides, *kind])
    state = PartialState()
    # The main process writes: locked, refused over anything but a library, swapped in whole at the end.
    output = atomic_output(args.out, MANIFEST_KIND, "clibd index build")
    with output if state.is_main_process else contextlib.nullcontext() as folder:
        model = CLIBDModel.from_pretrained(args.checkpoint).to(state.device)
        if args.table:
            library = build_table_library(
                cfg, model, args.modality, args.checkpoint, args.table, state, args.images, args.seed
            )
        else:
            library = build_library(cfg, model, args.modality, args.checkpoint, state)
        if library is not None:  # the main process
            library.save(folder)
    if library is not None:
        meta = library.index.metadata
        print(f"{len(library.index)} {args.modality} keys -> {args.out}")
        for key, what in REPORTED:
            if meta.get(key):
                print(f"{what}: {meta[key]}")
        print(_calibration_text(meta))
    return 0


def _calibration_text(meta: dict) -> str:
    """The thresholds and rank rules of a library's metadata, as lines."""
    lines = []
    for kind, reason in meta.get("calibration", {}).get("not_calibrated", {}).items():
        lines.append(f"not calibrated for {kind} queries: {reason}")
    for kind, cal in meta.get("thresholds", {}).items():
        lines.append(
            f"{kind} queries: new species below similarity {cal['threshold']:.4f} "
            f"(balanced accuracy {cal['balanced_accuracy']:.3f}; {cal['n_seen']} seen, {cal['n_unseen']} unseen)"
        )
    for kind, cal in meta.get("identity_thresholds", {}).items():
        lines.append(
            f"{kind} queries, re-ranked by identity: new species below {cal['threshold']:.2f} % identity "
            f"(balanced accuracy {cal['balanced_accuracy']:.3f})"
        )
    for mode, by_kind in meta.get("rank_rules", {}).items():
        for kind, rules in by_kind.items():
            lines.append(f"{kind} queries{' re-ranked by identity' if mode == 'reranked' else ''}, each rank's rule:")
            for rank in RANKS:
                rule = rules.get(rank)
                if rule is None:
                    continue
                if rule["rule"] == "threshold":
                    lines.append(
                        f"  {rank:8s} {rule['score']} >= {rule['threshold']:.4g}: balanced accuracy "
                        f"{rule['balanced_accuracy']:.3f} ({rule['n_correct']} right, {rule['n_wrong']} wrong)"
                    )
                else:
                    lines.append(f"  {rank:8s} {rule['rule']} ({rule['n_correct']} right, {rule['n_wrong']} wrong)")
    if not lines:
        lines.append("not calibrated: no new-species threshold or rank rule is stored")
    return "\n".join(lines)


def _info(directory: Path) -> int:
    meta_file = directory / "meta.json"
    if not meta_file.is_file():
        raise SystemExit(f"clibd index info: {directory} is not a library (no meta.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"clibd index info: {meta_file} is not readable JSON ({err})") from None
    info = meta.get("metadata", {})
    print(
        f"library {directory}: {meta.get('count')} {info.get('modality')} keys, {meta.get('dim')}-d, {meta.get('kind')}"
    )
    print(f"checkpoint hash {meta.get('checkpoint_hash')}")
    provenance = info.get("provenance")
    if provenance:
        for key in ("file", "rows", "sha256", "images", "checkpoint", "built", "hold_out_seed"):
            print(f"  {key}: {provenance.get(key)}")
    else:
        print(f"  built from {info.get('dataset')} (key splits {info.get('key_splits')})")
    for key, what in REPORTED:
        if info.get(key) is not None:
            print(f"{what}: {info[key]}")
    print(_calibration_text(info))
    return 0
