"""The ``clibd`` command. Each subcommand lives in ``clibd/commands/<name>.py`` with
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when used, so
``clibd --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from clibd.config import ConfigError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("clibd.commands.demo_data", "write the synthetic demo dataset in BIOSCAN-5M layout"),
    "data-summary": ("clibd.commands.data_summary", "read a configured dataset and print counts per split and rank"),
    "train": ("clibd.commands.train", "contrastive training (same as train.py)"),
    "eval": ("clibd.commands.evaluate", "retrieval / clustering evaluation (same as eval.py)"),
    "pretrain-dna": ("clibd.commands.pretrain_dna", "masked-token pretraining of the DNA tower"),
    "index": ("clibd.commands.index", "build a reference index from labelled specimens"),
    "embed": ("clibd.commands.embed", "embed new specimens (images or barcodes)"),
    "classify": ("clibd.commands.classify", "classify new specimens against a reference index"),
    "convert-clibd": ("clibd.commands.convert_clibd", "convert a released best.pth of the original CLIBD"),
    "serve": ("clibd.commands.serve", "local web app: classify specimens in the browser, browse a run's report"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: clibd COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nclibd: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module_name, help_ = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"clibd {argv[0]}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except ConfigError as err:  # a config that does not fit the schema: the message says it all
        print(f"clibd {argv[0]}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
