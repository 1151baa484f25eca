"""Validation at the end of an epoch and the best checkpoint.

``Validator(run)()`` returns ``{"val_loss": x}`` (the contrastive loss on the val_seen role,
averaged over processes) and, with ``train.val_retrieval``, the retrieval metrics of the val
split from one :class:`~clibd.eval.evaluator.RetrievalEvaluator` built for the whole run (the
table read once, the encoder compiled once; results files in OUT/val-retrieval).
``keep_best`` writes the ``best`` checkpoint when ``train.best_metric`` improved.
"""

from __future__ import annotations

from typing import Optional

import torch
from accelerate import PartialState

from clibd.config import LOSS_METRIC
from clibd.eval.evaluator import RetrievalEvaluator
from clibd.train.build import Run
from clibd.train.checkpoint import TrainerState, save_checkpoint


class Validator:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.retrieval: Optional[RetrievalEvaluator] = None
        if run.cfg.train.val_retrieval and run.val_loader is not None:
            data = run.data
            self.retrieval = RetrievalEvaluator(
                run.cfg, "val", state=PartialState(), table=data.table, skips=data.skips, weights_change=True
            )

    def __call__(self) -> dict[str, float]:
        metrics = {LOSS_METRIC: self._loss()}
        if self.retrieval is not None:
            metrics.update(self.retrieval.run(self.run.unwrapped, self.run.out_dir / "val-retrieval"))
        return metrics

    def _loss(self) -> float:
        run = self.run
        device = run.accelerator.device
        run.model.eval()
        total = torch.zeros(2, device=device)
        with torch.no_grad():
            for batch in run.val_loader:
                loss, _ = run.loss_fn(*run.model(batch), run.labels(batch))
                total += torch.stack([loss.detach().float(), torch.ones((), device=device)])
        run.model.train()
        total = run.accelerator.reduce(total, "sum")
        return (total[0] / total[1].clamp(min=1)).item()


def improved(value: float, best: Optional[float], metric: str) -> bool:
    if best is None:
        return True
    lower_is_better = metric.endswith("loss")
    return value < best if lower_is_better else value > best


def keep_best(run: Run, state: TrainerState, metrics: dict[str, float]) -> None:
    """Write ``checkpoints/best`` when ``train.best_metric`` improved after ``train.best_after_epoch``."""
    tc = run.cfg.train
    if tc.best_metric not in metrics:  # a retrieval pair whose queries or keys were empty
        raise ValueError(f"train.best_metric {tc.best_metric!r} is not among the validation metrics {sorted(metrics)}")
    if state.epoch > tc.best_after_epoch and improved(metrics[tc.best_metric], state.best, tc.best_metric):
        state.best = metrics[tc.best_metric]
        save_checkpoint(run.accelerator, run.model, run.ckpt_dir / "best", state)
