"""``clibd pretrain-dna --config CONFIG [key=value ...]``: masked-token pretraining of the DNA tower.

Multi-process / mixed precision: ``accelerate launch -m clibd.cli pretrain-dna ...`` with
``pretrain.mixed_precision=bf16``; the checkpoint (``pretrain.out_dir``) is what
``model.dna.pretrained`` of a training config loads.
"""

from __future__ import annotations

import argparse

from clibd.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config (configs/pretrain_dna/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pretrain.epochs=2")


def run(args: argparse.Namespace) -> int:
    from clibd.train.pretrain_dna import pretrain_dna

    cfg = load_config(args.config, args.overrides)
    summary = pretrain_dna(cfg)
    print(f"pretrain-dna: {summary['steps']} steps, checkpoint in {cfg.pretrain.out_dir}")
    return 0
