"""The ``clibd`` command. Each subcommand lives in ``clibd/commands/<name>.py`` with
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when used, so
``clibd --help`` stays fast.

An anticipated error (a config, an input, a file, weights, an output folder: every message
names the thing and says what is wrong) ends in one line on stderr and exit status 2 (a
config or command line) or 1, never a Python traceback; ``--debug`` anywhere on the command
line shows the traceback instead. Warnings are one line each too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
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
DEBUG = "--debug"
# Errors of modules a command may have loaded (looked up only if loaded: --help imports nothing).
LOADED_ERRORS = (
    ("clibd.train.checkpoint", "CheckpointError"),
    ("clibd.train.loop", "NonFiniteError"),
    ("safetensors", "SafetensorError"),
)


def anticipated(err: BaseException) -> bool:
    """An error whose message says it all (bad input, file or config), not a bug to show in full."""
    if isinstance(err, (OSError, ValueError)):
        return True
    classes = [getattr(sys.modules.get(module), name, None) for module, name in LOADED_ERRORS]
    return any(isinstance(err, cls) for cls in classes if isinstance(cls, type))


def one_line(err: BaseException) -> str:
    """The error's message on one line; an OS error as ``<file>: <what>`` (not ``[Errno 2] ...``)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
        text = f"{where}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command shows it: one line, without the source line that raised it."""
    return f"warning: {message}\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG in argv
    argv = [arg for arg in argv if arg != DEBUG]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: clibd COMMAND [options] [--debug]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nclibd: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module_name, help_ = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"clibd {argv[0]}", description=help_, epilog=f"{DEBUG}: show the Python traceback of an error"
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    formatter = warnings.formatwarning
    if not debug:
        warnings.formatwarning = warning_line
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"clibd {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not anticipated(err):
            raise
        print(f"clibd {argv[0]}: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    finally:
        warnings.formatwarning = formatter


if __name__ == "__main__":
    sys.exit(main())
