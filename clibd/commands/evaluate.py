"""``python eval.py --checkpoint DIR [--config CONFIG] [--split test|val] [--out DIR]
[--task retrieval|cluster] [key=value ...]``, or ``python eval.py --embeddings FILE.hdf5
[--labels FILE.json] [--out DIR]``.

``--embeddings`` scores the original CLIBD's released ``extracted_feature_from_<split>_split.hdf5``
(labels from ``labels_<split>.json`` beside it unless ``--labels``) with the same protocol code
(``clibd.eval.published``; docs/published.md); output defaults to ``FILE_DIR/eval-published``.

The config is ``--config`` if given, else the run's saved ``config.yaml`` found in the
checkpoint directory or up to three folders above it (``python train.py`` writes
OUT/config.yaml, OUT/model and OUT/checkpoints/<name>/model); overrides apply on top. Output goes to ``--out``, default
``CHECKPOINT/../eval-<split>``. Works under ``accelerate launch`` (embedding split across
processes; files written by the main process). The output folder is written whole or not at all
(``clibd.atomic``: a temporary folder renamed into place, with a manifest), refused when it holds
anything but an earlier evaluation, and locked against a second writer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Iterator, Optional, get_args

from clibd.atomic import atomic_output, check_replaceable
from clibd.config import MODALITIES, Config, ConfigError, EvalSplit, load_config


def add_checkpoint_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--checkpoint",
        required=required,
        help="model directory written by save_pretrained, e.g. a run's OUT/model (the best checkpoint's weights when "
        "training took one and train.final_model=best, the default; else the last) or OUT/checkpoints/last/model",
    )
    parser.add_argument(
        "--config", help="run config (default: the run's config.yaml in or up to 3 folders above the checkpoint)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.batch_size=64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser, required=False)
    parser.add_argument(
        "--embeddings",
        metavar="FILE.hdf5",
        help="instead of --checkpoint: the original CLIBD's extracted_feature_from_<split>_split.hdf5",
    )
    parser.add_argument(
        "--labels", metavar="FILE.json", help="with --embeddings: its labels_<split>.json (default: beside the hdf5)"
    )
    parser.add_argument("--split", choices=get_args(EvalSplit), help="query split (default: the config's eval.split)")
    parser.add_argument("--out", help="output folder (default: CHECKPOINT/../eval-<split>)")
    parser.add_argument("--task", choices=("retrieval", "cluster"), default="retrieval")
    parser.add_argument(
        "--modality",
        nargs="+",
        choices=MODALITIES,
        help="cluster: towers to embed with (default: image and dna where enabled)",
    )
    parser.add_argument(
        "--no-map",
        action="store_true",
        help="retrieval: skip embeddings.png / embeddings_map.csv (the UMAP map of the queries)",
    )
    parser.add_argument("--kmer-k", type=int, default=4, help="cluster: k of the k-mer-count DNA baseline")


def resolve_config(checkpoint: str | Path, config: Optional[str], overrides: list[str]) -> Config:
    from clibd.embed.run_dir import find_run_config

    path = config or find_run_config(checkpoint)
    if path is None:
        raise ConfigError(
            f"no --config given and no config.yaml in {checkpoint} or up to three folders above it; "
            "pass the config the model was trained with"
        )
    return load_config(path, overrides)


def run_published(args: argparse.Namespace) -> int:
    from clibd.eval.published import evaluate_published
    from clibd.eval.retrieval import results_markdown

    out = Path(args.out) if args.out else Path(args.embeddings).resolve().parent / "eval-published"
    results = evaluate_published(args.embeddings, out, labels_path=args.labels)
    print(results_markdown({k: v for k, v in results.items() if k != "meta"}).split("## Micro")[0])
    print(f"written to {out}")
    return 0


EVALUATION = "evaluation"  # the manifest kind of an evaluation folder (clibd.atomic)


def is_evaluation(folder: Path) -> bool:
    """An evaluation folder written before evaluations had manifests (results or clustering files)."""
    return (folder / "results.json").is_file() or (folder / "clustering.json").is_file()


@contextlib.contextmanager
def evaluation_output(out: Path, main_process: bool) -> Iterator[Path]:
    """Where an evaluation writes: on the main process a temporary folder that replaces ``out`` whole
    at the end (locked, refused over anything but an earlier evaluation); elsewhere ``out`` (nothing is
    written there). Every process checks ``out`` first, so that all refuse together."""
    check_replaceable(out, EVALUATION, "clibd eval", is_evaluation)
    if not main_process:
        yield out
        return
    with atomic_output(out, EVALUATION, "clibd eval", is_evaluation) as tmp:
        yield tmp


def run(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.embeddings):
        raise SystemExit("clibd eval: give exactly one of --checkpoint DIR or --embeddings FILE.hdf5")
    if args.embeddings:
        return run_published(args)
    from accelerate import PartialState

    from clibd.eval.clustering import cluster_report
    from clibd.eval.clustering_run import run_clustering
    from clibd.eval.evaluator import RetrievalEvaluator
    from clibd.eval.retrieval import results_markdown
    from clibd.models.clibd_model import CLIBDModel

    cfg = resolve_config(args.checkpoint, args.config, args.overrides)
    split = args.split or cfg.eval.split
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / f"eval-{split}"
    state = PartialState()
    model = CLIBDModel.from_pretrained(args.checkpoint).to(state.device)
    if args.task == "cluster":
        with evaluation_output(out, state.is_main_process) as folder:
            scores = run_clustering(
                cfg, model, folder, split, args.modality, args.kmer_k, state=state, checkpoint=args.checkpoint
            )
        if state.is_main_process:
            print(json.dumps(scores["ami"], indent=1))
            print(cluster_report(scores["ami"]))
    else:
        evaluator = RetrievalEvaluator(cfg, split, state=state)
        with evaluation_output(out, state.is_main_process) as folder:
            evaluator.run(model, folder, checkpoint=args.checkpoint, embedding_map=not args.no_map)
        if state.is_main_process:
            body = {k: v for k, v in evaluator.document.items() if k != "meta"}
            print(results_markdown(body).split("## Micro")[0])
    if state.is_main_process:
        print(f"written to {out}")
    return 0
