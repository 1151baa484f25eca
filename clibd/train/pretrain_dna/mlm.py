"""The masked-token pretraining loop: BertForMaskedLM, accelerate, and the optimiser, weight-decay
rule and schedule of contrastive training (``clibd.train.optim``, ``pretrain.*`` of ``OptimConfig``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import BertForMaskedLM

from clibd.config import DnaTowerConfig, PretrainConfig
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.models.dna import TOKENIZER_FILE, dna_bert_config
from clibd.models.kmer_bag import make_kmer_tokenizer
from clibd.train.optim import build_optimizer, build_scheduler, scaled_lr
from clibd.train.pretrain_dna.barcodes import DedupReport, OffsetEncodings
from clibd.train.pretrain_dna.masking import IGNORE_INDEX, mask_tokens

SUMMARY_FILE = "pretrain_summary.json"


def build_mlm(cfg: DnaTowerConfig, tokenizer: KmerTokenizer) -> BertForMaskedLM:
    """A BertForMaskedLM shaped like the DNA tower; continues from ``cfg.pretrained`` when set."""
    if cfg.pretrained:
        return BertForMaskedLM.from_pretrained(cfg.pretrained, local_files_only=True)
    return BertForMaskedLM(dna_bert_config(cfg, tokenizer))


class MaskedTokenObjective(torch.nn.Module):
    """Loss of a BertForMaskedLM, with the vocabulary head run on masked positions only.

    The head is the costly part for large k (4^k outputs per token); unmasked positions
    have no label, so computing their logits (as ``BertForMaskedLM.forward`` does) is waste.
    """

    def __init__(self, mlm: BertForMaskedLM) -> None:
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        chosen = labels != IGNORE_INDEX
        logits = self.mlm.cls(hidden[chosen])
        # A batch without a masked token gives 0 (not NaN), and keeps every rank's graph alike.
        return F.cross_entropy(logits.float(), labels[chosen], reduction="sum") / chosen.sum().clamp(min=1)


def pretrain_on_barcodes(
    barcodes: list[str],
    dna_cfg: DnaTowerConfig,
    cfg: PretrainConfig,
    out_dir: str | Path,
    cache_dir: Optional[str | Path] = None,
    dedup: Optional[DedupReport] = None,
) -> dict[str, Any]:
    """Pretrain on cleaned, unique ``barcodes``; write the HF checkpoint to ``out_dir``.

    ``out_dir`` is rewritten at the end of every epoch (and when ``max_steps`` stops the
    run), so it always holds the latest weights. Returns the run summary (also written to
    ``out_dir/pretrain_summary.json``).
    """
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    out_dir = Path(out_dir)
    tokenizer = make_kmer_tokenizer(dna_cfg)
    data = OffsetEncodings(barcodes, tokenizer, cache_dir)
    mlm = build_mlm(dna_cfg, tokenizer)
    if mlm.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"checkpoint {dna_cfg.pretrained} has vocab_size {mlm.config.vocab_size}, "
            f"the tokenizer (k={tokenizer.k}, {tokenizer.layout}) needs {tokenizer.vocab_size}"
        )
    loader = DataLoader(
        np.arange(len(data)), batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed)
    )
    model = MaskedTokenObjective(mlm)
    optimizer = build_optimizer(model, cfg, scaled_lr(cfg, accelerator.num_processes))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = (
        cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    )
    if total_steps < 1:
        raise ValueError(f"nothing to train: {len(data)} barcodes, epochs={cfg.epochs}, max_steps={cfg.max_steps}")
    # Not prepared: accelerate would step it once per process and overrun OneCycle's total.
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    masking = torch.Generator().manual_seed(cfg.seed * 1_000_003 + accelerator.process_index)
    history: list[dict[str, float]] = []
    step, start = 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        offsets = data.epoch_offsets(cfg.seed, epoch)
        model.train()
        losses = []
        for rows in loader:
            rows = rows.cpu().numpy()
            ids, mask = data.take(rows, offsets[rows])
            inputs, labels = mask_tokens(
                ids,
                mask,
                ratio=cfg.mask_ratio,
                mask_id=tokenizer.mask_id,
                kmer_offset=tokenizer.kmer_offset,
                generator=masking,
            )
            with accelerator.accumulate(model):
                device = accelerator.device
                loss = model(inputs.to(device), mask.to(device), labels.to(device))
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                if step % cfg.log_every_steps == 0:
                    accelerator.print(f"pretrain-dna step {step}/{total_steps} loss {loss.item():.4f}")
                if step >= total_steps:
                    break
        epoch_loss = accelerator.gather(torch.stack(losses)).float().mean().item()
        history.append({"epoch": epoch + 1, "step": step, "loss": epoch_loss, "seconds": time.perf_counter() - start})
        accelerator.print(f"pretrain-dna epoch {epoch + 1}: loss {epoch_loss:.4f}, {step} steps")
        summary = _save(accelerator, model, tokenizer, out_dir, history, dedup, total_steps)
        if step >= total_steps:
            break
    return summary


def save_checkpoint(mlm: BertForMaskedLM, tokenizer: KmerTokenizer, out_dir: Path, summary: dict[str, Any]) -> None:
    """The HF checkpoint ``model.dna.pretrained`` reads, with the tokenizer settings and the run summary."""
    mlm.save_pretrained(out_dir)
    (out_dir / TOKENIZER_FILE).write_text(json.dumps(tokenizer.settings(), indent=2))
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))


def _save(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: KmerTokenizer,
    out_dir: Path,
    history: list[dict[str, float]],
    dedup: Optional[DedupReport],
    total_steps: int,
) -> dict[str, Any]:
    summary = {
        "objective": "mlm",
        "steps": history[-1]["step"],
        "total_steps": total_steps,
        "history": history,
        "dedup": dedup.as_dict() if dedup else None,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(accelerator.unwrap_model(model).mlm, tokenizer, out_dir, summary)
    accelerator.wait_for_everyone()
    return summary
