"""The masked-token pretraining loop: BertForMaskedLM, AdamW + OneCycle, accelerate."""

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
from transformers import BertConfig, BertForMaskedLM

from clibd.config import Config, DnaTowerConfig, PretrainConfig, save_config
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.pretrain.barcodes import DedupReport, OffsetEncodings, unique_barcodes
from clibd.pretrain.masking import IGNORE_INDEX, mask_tokens

TOKENIZER_FILE = "dna_tokenizer.json"  # KmerTokenizer.settings() of the checkpoint
SUMMARY_FILE = "pretrain_summary.json"


def dna_tokenizer(cfg: DnaTowerConfig) -> KmerTokenizer:
    return KmerTokenizer(k=cfg.k, vocab=cfg.vocab, max_nucleotides=cfg.max_nucleotides, stride=cfg.stride)


def build_mlm(cfg: DnaTowerConfig, tokenizer: KmerTokenizer) -> BertForMaskedLM:
    """A BertForMaskedLM sized by ``cfg``; continues from ``cfg.pretrained`` when set."""
    if cfg.pretrained:
        return BertForMaskedLM.from_pretrained(cfg.pretrained)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=max(512, tokenizer.length),
        # id 0 is [MASK]: a padding_idx there would freeze its embedding at zero. Padding is
        # handled by the attention mask alone.
        pad_token_id=None,
    )
    return BertForMaskedLM(config)


def _mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; 0 (not NaN) for a batch with none."""
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / labels.ne(IGNORE_INDEX).sum().clamp(min=1)


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
    tokenizer = dna_tokenizer(dna_cfg)
    data = OffsetEncodings(barcodes, tokenizer, cache_dir)
    model = build_mlm(dna_cfg, tokenizer)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"checkpoint {dna_cfg.pretrained} has vocab_size {model.config.vocab_size}, "
            f"the tokenizer (k={tokenizer.k}, {tokenizer.layout}) needs {tokenizer.vocab_size}"
        )
    loader = DataLoader(
        np.arange(len(data)), batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"nothing to train: {len(data)} barcodes, epochs={cfg.epochs}, max_steps={cfg.max_steps}")
    # Not prepared: accelerate would step it once per process and overrun OneCycle's total.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.warmup_fraction
    )
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
                ids, mask, ratio=cfg.mask_ratio, mask_id=tokenizer.mask_id, kmer_offset=tokenizer.kmer_offset, generator=masking
            )
            with accelerator.accumulate(model):
                logits = model(input_ids=inputs.to(accelerator.device), attention_mask=mask.to(accelerator.device)).logits
                loss = _mlm_loss(logits, labels.to(accelerator.device))
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
        "steps": history[-1]["step"],
        "total_steps": total_steps,
        "history": history,
        "dedup": dedup.as_dict() if dedup else None,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out_dir)
        (out_dir / TOKENIZER_FILE).write_text(json.dumps(tokenizer.settings(), indent=2))
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    return summary


def pretrain_dna(cfg: Config) -> dict[str, Any]:
    """Read ``cfg.data``, keep ``cfg.pretrain.splits``, de-duplicate and pretrain."""
    from clibd.data.sources import read_specimens

    table, skips = read_specimens(cfg.data, require_image=False)  # DNA only: images are not needed
    print(f"pretrain-dna: {skips.summary()}")
    if cfg.pretrain.splits:
        unknown = sorted(set(cfg.pretrain.splits) - set(table["split"].dropna().unique()))
        if unknown:
            raise ValueError(
                f"pretrain.splits names {unknown}, absent from the data (splits: {sorted(table['split'].dropna().unique())})"
            )
        table = table[table["split"].isin(cfg.pretrain.splits)]
    barcodes, report = unique_barcodes(table["dna_barcode"], cfg.model.dna.k)
    print(f"pretrain-dna: {report}")
    out_dir = Path(cfg.pretrain.out_dir)
    save_config(cfg, out_dir / "config.yaml")
    return pretrain_on_barcodes(barcodes, cfg.model.dna, cfg.pretrain, out_dir, cfg.data.cache_dir, report)
