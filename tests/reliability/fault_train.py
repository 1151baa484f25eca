"""``train.py`` with one fault injected on one rank, for launching under ``accelerate launch``.

``CLIBD_FAULT=<raise|hang|nan>:<rank>:<step>``: at that training step's loss, the rank raises
``RuntimeError("injected fault ...")``, hangs (sleeps) without entering the collective, or
returns a NaN loss;
the time of the fault is written to ``CLIBD_FAULT_TIME_FILE``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from clibd.cli import main
from clibd.train.loss import ContrastiveLoss


def arm(spec: str, time_file: Path) -> None:
    action, rank, step = spec.split(":")
    if int(os.environ.get("RANK", "0")) != int(rank):
        return
    real_forward = ContrastiveLoss.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == int(step):
                time_file.write_text(str(time.time()))
                if action == "raise":
                    raise RuntimeError(f"injected fault on rank {rank} at step {step}")
                if action == "nan":
                    loss, pairs = real_forward(self, *args, **kwargs)
                    return loss * float("nan"), pairs
                time.sleep(3600)
        return real_forward(self, *args, **kwargs)

    ContrastiveLoss.forward = forward


if __name__ == "__main__":
    arm(os.environ["CLIBD_FAULT"], Path(os.environ["CLIBD_FAULT_TIME_FILE"]))
    sys.exit(main(["train", *sys.argv[1:]]))
