"""Contrastive training with accelerate, read top to bottom: set-up (data, model, optimiser,
schedule, resume), then per epoch the micro-batches (forward, backward), the optimiser step
(clip, non-finite policy, clamp), logging, and the end of the epoch (validate, keep the best,
checkpoint), and at the end the weights OUT/model holds (``train.final_model``).

Launch with ``python train.py`` (one process) or ``accelerate launch ... train.py``; the
same code runs on CPU (gloo), one GPU, or many GPUs and nodes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs, PartialState
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from clibd.config import LOSS_METRIC, MEAN_TOP1, Config, save_config
from clibd.embed.encoder import InferenceEncoder
from clibd.eval.retrieval import validation_metrics
from clibd.eval.run import run_evaluation
from clibd.models.clibd_model import CLIBDModel
from clibd.taxonomy import EVAL_RANKS
from clibd.train.checkpoint import (
    MODEL_DIR,
    CheckpointError,
    TrainerState,
    is_complete,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from clibd.train.loss import ContrastiveLoss
from clibd.train.optim import build_optimizer, build_scheduler, scaled_lr, tower_lr_scales
from clibd.train.setup import TrainingData, build_training_data


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
class _Run:
    """What the loop works with, built once by ``_set_up``."""

    cfg: Config
    accelerator: Accelerator
    data: TrainingData
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped under a multi-process launch)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    loss_fn: ContrastiveLoss
    total_steps: int
    out_dir: Path
    encoder: Optional[InferenceEncoder] = None  # validation retrieval's, compiled once per run

    @property
    def unwrapped(self) -> CLIBDModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "train_log.jsonl"

    def labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The label columns the loss reads: every rank for hierarchical targets, else ``train.label_rank``."""
        if self.cfg.train.loss_targets == "hierarchical":
            return batch["labels"]
        return batch["labels"][:, EVAL_RANKS.index(self.cfg.train.label_rank)]


@dataclass
class _Progress:
    """Counters of this process's run (not checkpointed)."""

    start: float = field(default_factory=time.perf_counter)
    losses: list[tuple[int, float]] = field(default_factory=list)
    samples: int = 0
    samples_at_log: int = 0
    time_at_log: float = field(default_factory=time.perf_counter)
    interrupted: bool = False


def _check_writable(out_dir: Path) -> None:
    """Fail at start-up, not after hours of training, when OUT cannot hold checkpoints."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_probe-{uuid.uuid4().hex[:8]}"  # every rank probes at once
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"output directory {out_dir} is not writable: {err}") from err


class _StopRequest:
    """SIGTERM (what SLURM sends before pre-emption) sets a flag; the loop checkpoints and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except ValueError:
        return math.inf  # half a line, written when a kill or a full disk cut the append short


def _truncate_log(log_path: Path, last_step: int) -> None:
    """Keep the log lines up to ``last_step`` (those a resumed run does not repeat); 0 = a fresh log."""
    if not log_path.is_file():
        return
    kept = [line for line in log_path.read_text().splitlines(keepends=True) if _logged_step(line) <= last_step]
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(log_path)


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The config flattened to ``{"train.lr": 5e-05, ...}`` with scalar values (lists as strings),
    what TensorBoard's hparams view takes."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(dataclasses.asdict(cfg), "")
    return flat


# ---- set-up -------------------------------------------------------------------------------
def _accelerator(cfg: Config, out_dir: Path) -> Accelerator:
    tc = cfg.train
    return Accelerator(
        # Without a GPU, processes started by torchrun (`accelerate launch --multi_gpu`)
        # join one gloo group only when accelerate is told to run on the CPU.
        cpu=not torch.accelerator.is_available(),
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
        log_with=list(tc.trackers) or None,
        project_dir=str(out_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=tc.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=tc.collective_timeout_s))],
    )


def _set_up(cfg: Config, out_dir: Path, resume_from: Optional[Path]) -> _Run:
    """Data, model, optimiser and schedule, prepared by accelerate. The model is rebuilt from the
    checkpoint on resume so the text vocabulary learned from the data is the one it was trained with."""
    tc = cfg.train
    accelerator = _accelerator(cfg, out_dir)
    if tc.cpu_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(tc.cpu_threads)
    set_seed(tc.seed)
    data = build_training_data(cfg, accelerator, resume_from / MODEL_DIR if resume_from else None)
    if accelerator.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
        for tower, (trainable, total) in data.trainable.items():
            accelerator.print(f"trainable parameters {tower}: {trainable:,} / {total:,}")
    lr = scaled_lr(tc, accelerator.num_processes)
    optimizer = build_optimizer(data.model, tc, lr, tower_lr_scales(cfg.model))
    model, optimizer, train_loader = accelerator.prepare(data.model, optimizer, data.train_loader)
    val_loader = accelerator.prepare(data.val_loader) if data.val_loader is not None else None
    steps_per_epoch = math.ceil(len(train_loader) / tc.grad_accum)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(tc.max_steps, total_steps)
    if total_steps < 1:
        raise ValueError(
            f"nothing to train: {len(data.train_loader.dataset)} training specimens give {len(train_loader)} "
            f"batches of {tc.batch_size} per process; lower train.batch_size or add data"
        )
    # Not prepared: accelerate would step it once per process and overrun OneCycle's total.
    scheduler = build_scheduler(optimizer, tc, total_steps)
    accelerator.register_for_checkpointing(scheduler)
    rank_weights = [tc.rank_weights.get(r, 0.0) for r in EVAL_RANKS]
    loss_fn = ContrastiveLoss(tc.loss_targets, accelerator.process_index, accelerator.num_processes, rank_weights)
    accelerator.print(
        f"training {total_steps} steps ({steps_per_epoch}/epoch) on {accelerator.num_processes} process(es), "
        f"{accelerator.device}, global batch {tc.batch_size * accelerator.num_processes * tc.grad_accum}, "
        f"peak lr {lr:.3g}"
    )
    return _Run(
        cfg, accelerator, data, model, optimizer, scheduler, train_loader, val_loader, loss_fn, total_steps, out_dir
    )


def _start_state(run: _Run, resume_from: Optional[Path]) -> TrainerState:
    """The resumed state, or a fresh one over whatever an earlier run left in OUT."""
    accelerator = run.accelerator
    state = TrainerState()
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        accelerator.print(
            f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
        )
    accelerator.init_trackers("clibd", config=hyperparameters(run.cfg))
    if accelerator.is_main_process:
        if resume_from is None and (run.ckpt_dir / "last").exists():
            accelerator.print(
                f"{run.out_dir} holds an earlier run: starting afresh over it (--resume latest continues it)"
            )
        if resume_from is None:  # an earlier run's best must not become this run's final model
            shutil.rmtree(run.ckpt_dir / "best", ignore_errors=True)
        _truncate_log(run.log_path, state.step)
    accelerator.wait_for_everyone()
    return state


# ---- the loop -----------------------------------------------------------------------------
def train(cfg: Config, out_dir: Path, resume: Optional[str] = None) -> TrainResult:
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    resume_from = resolve_checkpoint(out_dir, resume) if resume else None
    run = _set_up(cfg, out_dir, resume_from)
    state = _start_state(run, resume_from)
    progress = _Progress()
    stop = _StopRequest()
    bar = tqdm(total=run.total_steps, initial=state.step, disable=not run.accelerator.is_main_process, desc="train")
    try:
        while state.step < run.total_steps and not progress.interrupted:
            _train_epoch(run, state, progress, stop, bar)
            if not progress.interrupted:
                _end_of_epoch(run, state)
    finally:
        stop.restore()
        bar.close()
        # Not accelerator.end_training(): it also destroys the process group, which the
        # final save below and the evaluation after training still need.
        for tracker in run.accelerator.trackers:
            tracker.finish()
    seconds = time.perf_counter() - progress.start
    model_dir, final = (None, None) if progress.interrupted else _save_final_model(run)
    return TrainResult(
        out_dir=out_dir,
        model_dir=model_dir,
        steps=state.step,
        losses=progress.losses,
        best=state.best,
        skipped_nonfinite=state.skipped_nonfinite,
        interrupted=progress.interrupted,
        seconds=seconds,
        samples_per_s=progress.samples / max(seconds, 1e-9),
        final_model=final,
    )


def _train_epoch(run: _Run, state: TrainerState, progress: _Progress, stop: _StopRequest, bar: tqdm) -> None:
    """The rest of epoch ``state.epoch`` (from ``state.batch_in_epoch``), up to the run's last step
    or a SIGTERM (then a checkpoint is written and ``progress.interrupted`` set)."""
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
        progress.samples += batch["index"].shape[0] * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        lr_used = run.scheduler.get_last_lr()[0]
        stop_requested = _optimizer_step(run, state, batch, loss, nonfinite_loss, stop)
        nonfinite_loss.zero_()
        bar.update(1)
        if state.step % tc.log_every_steps == 0 or state.step == run.total_steps:
            _log_step(run, state, progress, loss, pairs, logit_scale, lr_used, bar)
        if stop_requested:
            accelerator.print(f"SIGTERM: writing a checkpoint at step {state.step} and stopping")
            save_checkpoint(accelerator, run.model, run.ckpt_dir / "last", state)
            progress.interrupted = True
            return
        if tc.checkpoint_every_steps and state.step % tc.checkpoint_every_steps == 0:
            save_checkpoint(accelerator, run.model, run.ckpt_dir / "last", state)
        if state.step >= run.total_steps:
            return


def _optimizer_step(
    run: _Run, state: TrainerState, batch: dict, loss: torch.Tensor, nonfinite_loss: torch.Tensor, stop: _StopRequest
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
    run: _Run,
    state: TrainerState,
    progress: _Progress,
    loss: torch.Tensor,
    pairs: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    lr: float,
    bar: tqdm,
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
        "samples_per_s": (progress.samples - progress.samples_at_log) / max(now - progress.time_at_log, 1e-9),
        "skipped_nonfinite": state.skipped_nonfinite,
    }
    progress.samples_at_log, progress.time_at_log = progress.samples, now
    progress.losses.append((state.step, logged[0]))
    accelerator.log(record, step=state.step)
    if accelerator.is_main_process:
        with run.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{logged[0]:.4f}", lr=f"{lr:.2e}")


# ---- end of an epoch ----------------------------------------------------------------------
def _end_of_epoch(run: _Run, state: TrainerState) -> None:
    """Count the epoch done, validate when due, keep the best, checkpoint ``last``."""
    tc = run.cfg.train
    if state.batch_in_epoch >= len(run.train_loader):
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    due = state.epoch % tc.eval_every_epochs == 0 or state.step >= run.total_steps
    if run.val_loader is not None and due:
        metrics = _validate(run)
        run.accelerator.log(metrics, step=state.step)
        shown = {k: v for k, v in metrics.items() if k in (LOSS_METRIC, tc.best_metric)}
        run.accelerator.print(
            f"epoch {state.epoch} step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
        )
        if tc.best_metric not in metrics:  # a retrieval pair whose queries or keys were empty
            raise ValueError(
                f"train.best_metric {tc.best_metric!r} is not among the validation metrics {sorted(metrics)}"
            )
        if state.epoch > tc.best_after_epoch and _improved(metrics[tc.best_metric], state.best, tc.best_metric):
            state.best = metrics[tc.best_metric]
            save_checkpoint(run.accelerator, run.model, run.ckpt_dir / "best", state)
    save_checkpoint(run.accelerator, run.model, run.ckpt_dir / "last", state)


def _improved(value: float, best: Optional[float], metric: str) -> bool:
    if best is None:
        return True
    lower_is_better = metric.endswith("loss")
    return value < best if lower_is_better else value > best


def _validate(run: _Run) -> dict[str, float]:
    metrics = {LOSS_METRIC: _validation_loss(run)}
    if run.cfg.train.val_retrieval:
        metrics.update(_validation_retrieval(run))
    return metrics


def _validation_loss(run: _Run) -> float:
    accelerator = run.accelerator
    run.model.eval()
    total = torch.zeros(2, device=accelerator.device)
    with torch.no_grad():
        for batch in run.val_loader:
            loss, _ = run.loss_fn(*run.model(batch), run.labels(batch))
            total += torch.stack([loss.detach().float(), torch.ones((), device=accelerator.device)])
    run.model.train()
    total = accelerator.reduce(total, "sum")
    return (total[0] / total[1].clamp(min=1)).item()


def mean_top1(metrics: dict[str, float]) -> float:
    """The mean of the micro and macro top-1 accuracies of every query->key pair, seen and
    unseen query role and rank: the published system's "best mean validation top-1" (docs/fidelity.md)."""
    top1 = [value for key, value in metrics.items() if key.endswith(("/top1/seen", "/top1/unseen"))]
    return sum(top1) / len(top1) if top1 else math.nan


def _validation_retrieval(run: _Run) -> dict[str, float]:
    """The retrieval protocol of ``clibd eval`` on the val split (results files in OUT/val-retrieval),
    through one encoder per run: compiled once (unfrozen), given the new weights at each validation."""
    cfg, model = run.cfg, run.unwrapped
    if run.encoder is None:
        device = run.accelerator.device
        run.encoder = InferenceEncoder(
            model, device, cfg.eval.precision, cfg.eval.compile, cfg.eval.batch_size, freeze=False
        )
    else:
        run.encoder.refresh(model)
    out = run.out_dir / "val-retrieval"
    results = run_evaluation(cfg, model, out, "val", state=PartialState(), encoder=run.encoder)
    metrics = validation_metrics(results)
    return {**metrics, MEAN_TOP1: mean_top1(metrics)}


def _save_final_model(run: _Run) -> tuple[Path, str]:
    """OUT/model: the best checkpoint's weights (``train.final_model=best``, when one was taken),
    else the last weights."""
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
