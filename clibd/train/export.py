"""The weights a finished run leaves in OUT/model (``train.final_model``)."""

from __future__ import annotations

from pathlib import Path

from clibd.models.clibd_model import CLIBDModel
from clibd.train.build import Run
from clibd.train.checkpoint import MODEL_DIR, is_complete


def save_final_model(run: Run) -> tuple[Path, str]:
    """OUT/model: the best checkpoint's weights (``train.final_model=best``, when one was taken),
    else the last weights. Returns the folder and which weights it holds ("best" or "last")."""
    accelerator, model_dir = run.accelerator, run.out_dir / MODEL_DIR
    best = run.ckpt_dir / "best"
    final = "best" if run.cfg.train.final_model == "best" and is_complete(best) else "last"
    if run.cfg.train.final_model == "best" and final == "last":
        accelerator.print("no best checkpoint was taken (no validation counted): OUT/model holds the last weights")
    if accelerator.is_main_process:
        if final == "best":
            CLIBDModel.from_pretrained(best / MODEL_DIR).save_pretrained(model_dir)
        else:
            run.unwrapped.save_pretrained(model_dir)
    accelerator.wait_for_everyone()
    return model_dir, final
