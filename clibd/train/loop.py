"""Contrastive training with accelerate, read top to bottom: per epoch the micro-batches
(forward, backward), the optimiser step (clip, non-finite policy, clamp), logging, and the
end of the epoch (validate, keep the best, checkpoint), and at the end the weights OUT/model
holds (``train.final_model``). What the loop works with is built in ``build.py``; validation
and the best checkpoint are ``validate.py``, the final weights ``export.py``, the step log
``run_log.py``.

Launch with ``python train.py`` (one process) or ``accelerate launch ... train.py``; the
same code runs on CPU (gloo), one GPU, or many GPUs and nodes.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from clibd.config import LOSS_METRIC, Config
from clibd.progress import progress
from clibd.train.build import Run, build_run, check_writable, start_state
from clibd.train.checkpoint import TrainerState, resolve_checkpoint, save_checkpoint
from clibd.train.export import save_final_model
from clibd.train.run_log import append_record
from clibd.train.validate import Validator, keep_best


class NonFiniteError(FloatingPointError):
    """A NaN/inf loss or gradient under ``train.nan_policy=stop``; names the step and batch."""


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Optional[Path]  # None when the run stopped early on SIGTERM
    steps: int
    losses: list[tuple[int, float]]  # (step, loss averaged over processes) at each log step
    best: Optional[float]
    skipped_nonfinite: int
    interrupted: bool
    seconds: float
    samples_per_s: float
    final_model: Optional[str] = None  # "best" or "last": whose weights model_dir holds


@dataclass
class _Progress:
    """Counters of this process's run (not checkpointed)."""

    start: float = field(default_factory=time.perf_counter)
    losses: list[tuple[int, float]] = field(default_factory=list)
    samples: int = 0
    samples_at_log: int = 0
    time_at_log: float = field(default_factory=time.perf_counter)
    interrupted: bool = False


class _StopRequest:
    """SIGTERM (what SLURM sends before pre-emption) sets a flag; the loop checkpoints and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


# ---- the loop -----------------------------------------------------------------------------
def train(cfg: Config, out_dir: Path, resume: Optional[str] = None) -> TrainResult:
    out_dir = Path(out_dir)
    check_writable(out_dir)
    resume_from = resolve_checkpoint(out_dir, resume) if resume else None
    run = build_run(cfg, out_dir, resume_from)
    state = start_state(run, resume_from)
    validate = Validator(run)
    counters = _Progress()
    stop = _StopRequest()
    bar = progress(
        total=run.total_steps,
        initial=state.step,
        desc="train",
        every=cfg.train.log_every_steps,
        disable=not run.accelerator.is_main_process,
    )
    try:
        while state.step < run.total_steps and not counters.interrupted:
            _train_epoch(run, state, counters, stop, bar)
            if not counters.interrupted:
                _end_of_epoch(run, state, validate)
    finally:
        stop.restore()
        bar.close()
        # Not accelerator.end_training(): it also destroys the process group, which the
        # final save below and the evaluation after training still need.
        for tracker in run.accelerator.trackers:
            tracker.finish()
    seconds = time.perf_counter() - counters.start
    model_dir, final = (None, None) if counters.interrupted else save_final_model(run)
    return TrainResult(
        out_dir=out_dir,
        model_dir=model_dir,
        steps=state.step,
        losses=counters.losses,
        best=state.best,
        skipped_nonfinite=state.skipped_nonfinite,
        interrupted=counters.interrupted,
        seconds=seconds,
        samples_per_s=counters.samples / max(seconds, 1e-9),
        final_model=final,
    )


def _train_epoch(run: Run, state: TrainerState, counters: _Progress, stop: _StopRequest, bar: Any) -> None:
    """The rest of epoch ``state.epoch`` (from ``state.batch_in_epoch``), up to the run's last step
    or a SIGTERM (then a checkpoint is written and ``counters.interrupted`` set)."""
    accelerator, tc = run.accelerator, run.cfg.train
    run.train_loader.set_epoch(state.epoch)
    run.data.train.set_epoch(state.epoch)  # the augmentation seeds
    loader = run.train_loader
    if state.batch_in_epoch:
        loader = accelerator.skip_first_batches(run.train_loader, state.batch_in_epoch)
    run.model.train()
    nonfinite_loss = torch.zeros((), device=accelerator.device)  # micro-batches since the last step
    for batch in loader:
        with accelerator.accumulate(run.model):
            features, logit_scale = run.model(run.data.prepare(batch))
            loss, pairs = run.loss_fn(features, logit_scale, run.labels(batch))
            nonfinite_loss += ~torch.isfinite(loss.detach())
            accelerator.backward(loss)
        state.batch_in_epoch += 1
        counters.samples += batch["index"].shape[0] * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        lr_used = run.scheduler.get_last_lr()[0]
        stop_requested = _optimizer_step(run, state, batch, loss, nonfinite_loss, stop)
        nonfinite_loss.zero_()
        if state.step % tc.log_every_steps == 0 or state.step == run.total_steps:
            _log_step(run, state, counters, loss, pairs, logit_scale, lr_used, bar)
        bar.update(1)  # after the step's loss is set on it: a log file's progress line shows it
        if stop_requested:
            accelerator.print(f"SIGTERM: writing a checkpoint at step {state.step} and stopping")
            save_checkpoint(accelerator, run.model, run.ckpt_dir / "last", state)
            counters.interrupted = True
            return
        if tc.checkpoint_every_steps and state.step % tc.checkpoint_every_steps == 0:
            save_checkpoint(accelerator, run.model, run.ckpt_dir / "last", state)
        if state.step >= run.total_steps:
            return


def _optimizer_step(
    run: Run, state: TrainerState, batch: dict, loss: torch.Tensor, nonfinite_loss: torch.Tensor, stop: _StopRequest
) -> bool:
    """Clip, then step unless the loss or the gradient norm is non-finite (``train.nan_policy``);
    schedule and clamp. Returns whether any process asked to stop (SIGTERM)."""
    accelerator, tc = run.accelerator, run.cfg.train
    # The total norm over every gradient (after the cross-process all-reduce): one pass that
    # both clips and detects NaN/inf. Under fp16 the gradient scaler skips overflows itself.
    max_norm = tc.grad_clip_norm if tc.grad_clip_norm is not None else math.inf
    norm = accelerator.clip_grad_norm_(run.model.parameters(), max_norm)
    bad_grads = norm is not None and tc.mixed_precision != "fp16" and not torch.isfinite(norm)
    # One small all-reduce: every rank takes the same decision.
    stop_flag = torch.tensor(float(stop.requested), device=accelerator.device)
    flags = torch.stack([nonfinite_loss + float(bad_grads), stop_flag])
    flags = accelerator.reduce(flags, "sum")
    if flags[0] > 0:
        if tc.nan_policy == "stop":
            raise NonFiniteError(
                f"non-finite loss or gradient at step {state.step + 1} (epoch {state.epoch}, batch "
                f"{state.batch_in_epoch - 1}; loss {loss.item()}); "
                f"batch processids: {run.data.train_ids(batch['index'])}"
            )
        state.skipped_nonfinite += 1
        accelerator.print(
            f"step {state.step + 1}: non-finite loss or gradient, step skipped ({state.skipped_nonfinite} so far)"
        )
    else:
        run.optimizer.step()
    run.optimizer.zero_grad()
    run.scheduler.step()
    run.unwrapped.clamp_logit_scale()
    state.step += 1
    return bool(flags[1] > 0)


def _log_step(
    run: Run,
    state: TrainerState,
    counters: _Progress,
    loss: torch.Tensor,
    pairs: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    lr: float,
    bar: Any,
) -> None:
    """Loss (mean over processes), per-pair losses, lr, scale and speed to the trackers and OUT/train_log.jsonl."""
    accelerator = run.accelerator
    now = time.perf_counter()
    logged = torch.stack([loss.detach().float(), *(v.detach().float() for v in pairs.values())])
    logged = accelerator.reduce(logged, "mean").tolist()
    record = {
        "step": state.step,
        "epoch": state.epoch,
        "loss": logged[0],
        **{f"loss/{k}": v for k, v in zip(pairs, logged[1:])},
        "lr": lr,
        "logit_scale": logit_scale.detach().exp().item(),
        "samples_per_s": (counters.samples - counters.samples_at_log) / max(now - counters.time_at_log, 1e-9),
        "skipped_nonfinite": state.skipped_nonfinite,
    }
    counters.samples_at_log, counters.time_at_log = counters.samples, now
    counters.losses.append((state.step, logged[0]))
    accelerator.log(record, step=state.step)
    if accelerator.is_main_process:
        append_record(run.log_path, record)
        bar.set_postfix(loss=f"{logged[0]:.4f}", lr=f"{lr:.2e}")


# ---- end of an epoch ----------------------------------------------------------------------
def _end_of_epoch(run: Run, state: TrainerState, validate: Validator) -> None:
    """Count the epoch done, validate when due, keep the best, checkpoint ``last``."""
    tc = run.cfg.train
    if state.batch_in_epoch >= len(run.train_loader):
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    due = state.epoch % tc.eval_every_epochs == 0 or state.step >= run.total_steps
    if run.val_loader is not None and due:
        metrics = validate()
        run.accelerator.log(metrics, step=state.step)
        shown = {k: v for k, v in metrics.items() if k in (LOSS_METRIC, tc.best_metric)}
        run.accelerator.print(
            f"epoch {state.epoch} step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
        )
        keep_best(run, state, metrics)
    save_checkpoint(run.accelerator, run.model, run.ckpt_dir / "last", state)
