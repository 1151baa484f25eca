"""Contrastive training with accelerate, read top to bottom: data, model, optimiser,
schedule, the loop (accumulate, non-finite policy, clamp, log), validation, checkpoints.

Launch with ``python train.py`` (one process) or ``accelerate launch ... train.py``; the
same code runs on CPU (gloo), one GPU, or many GPUs and nodes.
"""

from __future__ import annotations

import json
import math
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from clibd.train.checkpoint import (
    MODEL_DIR,
    CheckpointError,
    TrainerState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from clibd.config import Config, save_config
from clibd.eval.retrieval import validation_metrics
from clibd.eval.run import run_evaluation
from clibd.taxonomy import EVAL_RANKS
from clibd.train.loss import ContrastiveLoss
from clibd.train.optim import build_scheduler, param_groups, scaled_lr
from clibd.train.setup import TrainingData, build_training_data

NAN_POLICIES = ("skip", "stop")


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


def _grads_finite(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(g).all() for g in grads]).all()


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


def _validation_loss(accelerator: Accelerator, model, loader, loss_fn: ContrastiveLoss, label_col: int) -> float:
    model.eval()
    total = torch.zeros(2, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            loss, _ = loss_fn(model(batch), accelerator.unwrap_model(model).logit_scale, batch["labels"][:, label_col])
            total += torch.stack([loss.detach().float(), torch.ones((), device=accelerator.device)])
    model.train()
    total = accelerator.reduce(total, "sum")
    return (total[0] / total[1].clamp(min=1)).item()


def _validation_retrieval(cfg: Config, accelerator: Accelerator, model, out_dir: Path) -> dict[str, float]:
    """The retrieval protocol of ``clibd eval`` on the val split (results files in ``out_dir``)."""
    return validation_metrics(run_evaluation(cfg, model, out_dir, "val", accelerator))


def _improved(value: float, best: Optional[float], metric: str) -> bool:
    if best is None:
        return True
    lower_is_better = metric.endswith("loss")
    return value < best if lower_is_better else value > best


def train(cfg: Config, out_dir: Path, resume: Optional[str] = None) -> TrainResult:
    tc = cfg.train
    if tc.nan_policy not in NAN_POLICIES:
        raise ValueError(f"train.nan_policy must be one of {NAN_POLICIES}, got {tc.nan_policy!r}")
    if tc.label_rank not in EVAL_RANKS:
        raise ValueError(f"train.label_rank must be one of {EVAL_RANKS}, got {tc.label_rank!r}")
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    accelerator = Accelerator(
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
    if tc.cpu_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(tc.cpu_threads)
    set_seed(tc.seed)
    resume_from = resolve_checkpoint(out_dir, resume) if resume else None

    # Data and model: the model is rebuilt from the checkpoint on resume so the text
    # vocabulary learned from the data is the one the weights were trained with.
    data: TrainingData = build_training_data(cfg, accelerator, resume_from / MODEL_DIR if resume_from else None)
    model = data.model
    if accelerator.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
        for tower, (trainable, total) in data.trainable.items():
            accelerator.print(f"trainable parameters {tower}: {trainable:,} / {total:,}")

    lr = scaled_lr(tc, accelerator.num_processes)
    # fused: one kernel for all tensors; the default is a per-tensor loop on the CPU (bench/train_step.py).
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=lr, fused=True)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)
    val_loader = accelerator.prepare(data.val_loader) if data.val_loader is not None else None
    steps_per_epoch = math.ceil(len(train_loader) / tc.grad_accum)
    total_steps = tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)
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
    # Hierarchical targets read every rank's label column; the others one.
    label_col = slice(None) if tc.loss_targets == "hierarchical" else EVAL_RANKS.index(tc.label_rank)
    unwrapped = accelerator.unwrap_model(model)

    state = TrainerState()
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        accelerator.print(f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
    accelerator.init_trackers("clibd")
    log_path = out_dir / "train_log.jsonl"
    ckpt_dir = out_dir / "checkpoints"
    if accelerator.is_main_process:
        if resume_from is None and (ckpt_dir / "last").exists():
            accelerator.print(f"{out_dir} holds an earlier run: starting afresh over it (--resume latest continues it)")
        _truncate_log(log_path, state.step)
    stop = _StopRequest()
    accelerator.print(
        f"training {total_steps} steps ({steps_per_epoch}/epoch) on {accelerator.num_processes} process(es), "
        f"{accelerator.device}, global batch {tc.batch_size * accelerator.num_processes * tc.grad_accum}, peak lr {lr:.3g}"
    )

    losses: list[tuple[int, float]] = []
    start = time.perf_counter()
    samples, samples_at_log, time_at_log = 0, 0, start
    micro_nonfinite = torch.zeros((), device=accelerator.device)
    bar = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="train")
    interrupted = False
    try:
        while state.step < total_steps:
            train_loader.set_epoch(state.epoch)
            batches = accelerator.skip_first_batches(train_loader, state.batch_in_epoch) if state.batch_in_epoch else train_loader
            model.train()
            for batch in batches:
                # Seeded by position so a resumed run draws the same dropout as an uninterrupted one.
                set_seed(tc.seed * 1_000_003 + state.epoch * 10_007 + state.batch_in_epoch, device_specific=True)
                with accelerator.accumulate(model):
                    loss, pairs = loss_fn(model(data.prepare(batch)), unwrapped.logit_scale, batch["labels"][:, label_col])
                    micro_nonfinite += ~torch.isfinite(loss.detach())
                    accelerator.backward(loss)
                    state.batch_in_epoch += 1
                    samples += batch["index"].shape[0] * accelerator.num_processes
                    if not accelerator.sync_gradients:
                        continue
                    # One small all-reduce: every rank takes the same decision.
                    grads_bad = ~_grads_finite(model) if tc.mixed_precision != "fp16" else torch.tensor(False)
                    flags = torch.stack([micro_nonfinite + grads_bad.to(micro_nonfinite.device), torch.tensor(float(stop.requested), device=accelerator.device)])
                    flags = accelerator.reduce(flags, "sum")
                    micro_nonfinite.zero_()
                    if flags[0] > 0:
                        if tc.nan_policy == "stop":
                            ids = data.train_ids(batch["index"])
                            raise NonFiniteError(
                                f"non-finite loss or gradient at step {state.step + 1} (epoch {state.epoch}, batch "
                                f"{state.batch_in_epoch - 1}; loss {loss.item()}); batch processids: {ids}"
                            )
                        state.skipped_nonfinite += 1
                        accelerator.print(f"step {state.step + 1}: non-finite loss or gradient, step skipped ({state.skipped_nonfinite} so far)")
                    else:
                        optimizer.step()
                    optimizer.zero_grad()
                lr_used = scheduler.get_last_lr()[0]
                scheduler.step()
                unwrapped.clamp_logit_scale()
                state.step += 1
                bar.update(1)

                if state.step % tc.log_every_steps == 0 or state.step == total_steps:
                    now = time.perf_counter()
                    logged = torch.stack([loss.detach().float(), *(v.detach().float() for v in pairs.values())])
                    logged = accelerator.reduce(logged, "mean").tolist()
                    record = {
                        "step": state.step,
                        "epoch": state.epoch,
                        "loss": logged[0],
                        **{f"loss/{k}": v for k, v in zip(pairs, logged[1:])},
                        "lr": lr_used,
                        "logit_scale": unwrapped.logit_scale.exp().item(),
                        "samples_per_s": (samples - samples_at_log) / max(now - time_at_log, 1e-9),
                        "skipped_nonfinite": state.skipped_nonfinite,
                    }
                    samples_at_log, time_at_log = samples, now
                    losses.append((state.step, logged[0]))
                    accelerator.log(record, step=state.step)
                    if accelerator.is_main_process:
                        with log_path.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        bar.set_postfix(loss=f"{logged[0]:.4f}", lr=f"{record['lr']:.2e}")

                if flags[1] > 0:
                    accelerator.print(f"SIGTERM: writing a checkpoint at step {state.step} and stopping")
                    save_checkpoint(accelerator, model, ckpt_dir / "last", state)
                    interrupted = True
                    break
                if tc.checkpoint_every_steps and state.step % tc.checkpoint_every_steps == 0:
                    save_checkpoint(accelerator, model, ckpt_dir / "last", state)
                if state.step >= total_steps:
                    break
            if interrupted:
                break
            if state.batch_in_epoch >= len(train_loader):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            # The end of an epoch or of the run: validate, keep the best, checkpoint.
            if val_loader is not None and (state.epoch % tc.eval_every_epochs == 0 or state.step >= total_steps):
                metrics = {"val_loss": _validation_loss(accelerator, model, val_loader, loss_fn, label_col)}
                if tc.val_retrieval:
                    metrics.update(_validation_retrieval(cfg, accelerator, unwrapped, out_dir / "val-retrieval"))
                accelerator.log(metrics, step=state.step)
                shown = {k: v for k, v in metrics.items() if k == "val_loss" or k == tc.best_metric}
                accelerator.print(f"epoch {state.epoch} step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
                if tc.best_metric not in metrics:
                    raise ValueError(f"train.best_metric {tc.best_metric!r} is not among the validation metrics {sorted(metrics)}")
                if _improved(metrics[tc.best_metric], state.best, tc.best_metric):
                    state.best = metrics[tc.best_metric]
                    save_checkpoint(accelerator, model, ckpt_dir / "best", state)
            save_checkpoint(accelerator, model, ckpt_dir / "last", state)
    finally:
        stop.restore()
        bar.close()
        # Not accelerator.end_training(): it also destroys the process group, which the
        # final save below and the evaluation after training still need.
        for tracker in accelerator.trackers:
            tracker.finish()

    seconds = time.perf_counter() - start
    model_dir = None
    if not interrupted:
        model_dir = out_dir / MODEL_DIR
        if accelerator.is_main_process:
            unwrapped.save_pretrained(model_dir)
        accelerator.wait_for_everyone()
    return TrainResult(
        out_dir=out_dir,
        model_dir=model_dir,
        steps=state.step,
        losses=losses,
        best=state.best,
        skipped_nonfinite=state.skipped_nonfinite,
        interrupted=interrupted,
        seconds=seconds,
        samples_per_s=samples / max(seconds, 1e-9),
    )
