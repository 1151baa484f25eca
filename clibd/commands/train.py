"""``python train.py [--config CONFIG] [--out DIR] [--resume latest|PATH] [key=value ...]``.

With no ``--config`` it trains ``configs/demo.yaml`` on the demo data (generated if absent).
Exit status 0 when done, 143 when SIGTERM stopped it after a checkpoint (resume with
``--resume latest``). An OUT holding an earlier run is refused unless ``--resume`` continues it or
``--overwrite`` starts afresh over it (``clibd.train.out_dir``); a second run to the same OUT
fails at once (a lock).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
SIGTERM_EXIT = 143  # 128 + SIGTERM: "stopped, not finished", as schedulers expect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"run config (default: {DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[1])})")
    parser.add_argument("--out", help="output folder (default: the config's out_dir)")
    parser.add_argument("--resume", help="'latest' (OUT/checkpoints/last) or a checkpoint directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh over an earlier run in --out (its outputs are removed)"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the retrieval evaluation after training")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit (reads no data)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")


def run(args: argparse.Namespace) -> int:
    from clibd.config import load_config, to_yaml

    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)  # checked before torch is even imported
    out = Path(args.out or cfg.out_dir)
    cfg.out_dir = str(out)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from clibd.atomic import output_lock
    from clibd.train.loop import train
    from clibd.train.out_dir import prepare_out_dir

    # Every process checks OUT, so that all refuse together; the first (RANK 0 under a launcher) holds
    # the lock, so that another run to OUT fails at once, and clears an earlier run under --overwrite.
    main = int(os.environ.get("RANK", "0")) == 0
    prepare_out_dir(out, args.resume, args.overwrite, main_process=False)
    with output_lock(out) if main else contextlib.nullcontext():
        prepare_out_dir(out, args.resume, args.overwrite, main_process=main)
        result = train(cfg, out, resume=args.resume)
        evaluated = None if args.no_eval or result.interrupted else _evaluate(cfg, result.model_dir)
    if result.interrupted:
        print(
            f"stopped by SIGTERM at step {result.steps};"
            f" resume with: python train.py --config ... --out {out} --resume latest"
        )
        return SIGTERM_EXIT
    _print_summary(result, evaluated)
    return 0


def _evaluate(cfg, model_dir: Path):
    """The retrieval evaluation of ``clibd eval`` on the trained model (main process writes)."""
    from accelerate import PartialState

    from clibd.commands.evaluate import evaluation_output
    from clibd.eval.evaluator import RetrievalEvaluator
    from clibd.models.clibd_model import CLIBDModel

    state = PartialState()  # the one training set up
    model = CLIBDModel.from_pretrained(model_dir).to(state.device)
    out = model_dir.parent / f"eval-{cfg.eval.split}"
    with evaluation_output(out, state.is_main_process) as folder:
        RetrievalEvaluator(cfg, cfg.eval.split, state=state).run(model, folder, checkpoint=str(model_dir))
    return out if state.is_main_process else None


def _print_summary(result, evaluated) -> None:
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    first, last = (result.losses[0][1], result.losses[-1][1]) if result.losses else (float("nan"), float("nan"))
    out = result.out_dir
    print(
        f"\ndone: {result.steps} steps in {result.seconds:.0f} s ({result.samples_per_s:.1f} samples/s), "
        f"loss {first:.4f} -> {last:.4f}, {result.skipped_nonfinite} non-finite steps skipped\n"
        f"  config       {out / 'config.yaml'}\n"
        f"  model        {result.model_dir} ({result.final_model} weights)\n"
        f"  checkpoints  {out / 'checkpoints'} (last, best)\n"
        f"  step log     {out / 'train_log.jsonl'}\n"
        f"  tensorboard  tensorboard --logdir {out}" + (f"\n  evaluation   {evaluated}" if evaluated else "")
    )
