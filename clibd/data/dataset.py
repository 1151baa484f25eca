"""Specimen table -> batches of tensors (the batch dict of docs/architecture.md).

Everything but the images is prepared once when the dataset is built (DNA k-mer ids from
the tokenizer's cache, taxonomy text ids per distinct string, label codes); a batch is
then one numpy fancy index per array. ``__getitems__`` builds the whole batch, so the
DataLoader's collate is the identity. Images are read and decoded per sample.

Bad records under ``data.bad_records``: ``error`` raises naming the processid and the
problem; ``skip`` drops the sample from its batch, logs it, and remembers it in a
shared-memory flag per row (so DataLoader workers report to the main process and a bad
image is not decoded again next epoch); ``dataset.skipped`` is the ``SkipReport``
(distinct records per reason). A batch may therefore hold fewer than ``batch_size`` rows.

Training augmentation of a row draws from a generator seeded with (``seed``, epoch, row), so
a run resumed mid-epoch augments every row as the uninterrupted run did; ``set_epoch`` (read
by DataLoader workers through shared memory) names the epoch.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from clibd.config import DataConfig, TextTowerConfig
from clibd.data.bad_records import SkipReport
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.data.images import ImageReadError, read_image_bytes
from clibd.data.specimens import POLICIES, REASON_DNA, REASON_IMAGE
from clibd.data.text import TextEncoding, encode_taxonomy
from clibd.data.transforms import ImageDecodeError, build_normalize, build_pil_transform, decode_image, decode_side
from clibd.taxonomy import label_codes

log = logging.getLogger(__name__)

REASON_UNREADABLE = "unreadable image"
REASON_CORRUPT = "corrupt image"
# Flag code of each skip reason is its position + 1 (0 = not skipped).
SKIP_REASONS: tuple[str, ...] = (REASON_IMAGE, REASON_UNREADABLE, REASON_CORRUPT, REASON_DNA)


class RecordError(ValueError):
    """A specimen that cannot be served under ``bad_records=error``; names processid and problem."""


class SpecimenDataset(Dataset):
    """Map-style dataset over a specimen table; a modality is served only when its
    tokenizer (DNA, text) or ``image_size`` (image) is given."""

    def __init__(
        self,
        table: pd.DataFrame,
        data_cfg: DataConfig,
        image_size: Optional[int] = None,
        dna_tokenizer: Optional[KmerTokenizer] = None,
        text_tokenizer: Any = None,
        text_cfg: Optional[TextTowerConfig] = None,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        if data_cfg.bad_records not in POLICIES:
            raise ValueError(f"data.bad_records must be one of {POLICIES}, got {data_cfg.bad_records!r}")
        self.table = table
        self.policy = data_cfg.bad_records
        self.processid = table["processid"].to_numpy(dtype=object)
        self.labels = label_codes(table)
        self._flags = torch.zeros(len(table), dtype=torch.uint8).share_memory_()
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # shared with the workers

        self.image_size = image_size
        self.augmented = False
        if image_size is not None:
            augment = data_cfg.augment if train else None
            pipeline = data_cfg.image_pipeline
            self._decode_side = decode_side(image_size, augment, data_cfg.eval_resize, pipeline)
            self.augmented = augment is not None and augment.enabled
            self.transform = build_pil_transform(image_size, augment, data_cfg.eval_resize, pipeline)
            self.normalize = build_normalize(data_cfg.mean, data_cfg.std)
            if augment is not None and augment.enabled and augment.on_device:
                if pipeline == "original":
                    raise ValueError(
                        "data.augment.on_device augments uint8 crops on the device; data.image_pipeline=original "
                        "resizes and rotates float tensors as the published code does: choose one"
                    )
                # uint8 squares, augmented and normalised on the device (clibd/data/gpu_augment.py).
                self.image_size = self._decode_side
                self.transform = build_pil_transform(self._decode_side)
                self.normalize = torch.nn.Identity()
            self.image_ref = table["image_ref"].to_numpy(dtype=object, na_value=None)
            self._refuse(np.array([r is None for r in self.image_ref], dtype=bool), REASON_IMAGE, "no image_ref")

        self.dna: Optional[tuple[np.ndarray, np.ndarray]] = None
        if dna_tokenizer is not None:
            barcodes = table["dna_barcode"].astype("string").fillna("").tolist()
            enc = dna_tokenizer.encode_cached(barcodes, data_cfg.cache_dir)
            self.dna = (enc.ids, enc.attention_mask)
            real_tokens = enc.attention_mask.sum(axis=1) - (dna_tokenizer.cls_id is not None)
            self._refuse(real_tokens == 0, REASON_DNA, "barcode has no nucleotides after cleaning")

        self.text: Optional[TextEncoding] = None
        if text_tokenizer is not None:
            text_cfg = text_cfg or TextTowerConfig()
            self.text = encode_taxonomy(
                table, text_tokenizer, text_cfg.template, text_cfg.missing_word, text_cfg.max_length
            )

    def _refuse(self, bad: np.ndarray, reason: str, problem: str) -> None:
        """Rows known bad up front: raise (``error``) or flag them so batches drop them (``skip``)."""
        rows = np.flatnonzero(bad)
        if not len(rows):
            return
        if self.policy == "error":
            raise RecordError(
                f"record {self.processid[rows[0]]} (row {rows[0]}): {problem} "
                f"({len(rows)} such records; data.bad_records=skip drops them)"
            )
        self._flags[torch.from_numpy(rows)] = SKIP_REASONS.index(reason) + 1
        log.warning("%d records skipped: %s (e.g. %s)", len(rows), reason, self.processid[rows[0]])

    def __len__(self) -> int:
        return len(self.table)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentations the next batches draw (visible to running workers)."""
        self._epoch[0] = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """A batch of one (the DataLoader calls ``__getitems__``)."""
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        if self.policy == "skip":
            rows = rows[self._flags.numpy()[rows] == 0]
        batch: dict[str, torch.Tensor] = {}
        if self.image_size is not None:
            images = [self._image(row) for row in rows]
            served = np.array([img is not None for img in images], dtype=bool)
            rows = rows[served]
            images = [img for img in images if img is not None]
            size = self.image_size
            stacked = torch.stack(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8)
            batch["image"] = self.normalize(stacked)
        if self.dna is not None:
            batch["dna_ids"] = torch.from_numpy(self.dna[0][rows]).long()
            batch["dna_mask"] = torch.from_numpy(self.dna[1][rows]).long()
        if self.text is not None:
            ids, mask = self.text.rows(rows)
            batch["text_ids"] = torch.from_numpy(ids)
            batch["text_mask"] = torch.from_numpy(mask).long()
        batch["labels"] = torch.from_numpy(self.labels[rows])
        batch["index"] = torch.from_numpy(rows)
        return batch

    def _image(self, row: int) -> Optional[torch.Tensor]:
        ref = self.image_ref[row]
        try:
            img = decode_image(read_image_bytes(ref), ref, self._decode_side)
        except ImageReadError as err:
            reason, error = REASON_UNREADABLE, err
        except ImageDecodeError as err:
            reason, error = REASON_CORRUPT, err
        else:
            if not self.augmented:
                return self.transform(img)
            # The row's own stream: the same crop and flips whatever was drawn before it.
            row_seed = np.random.SeedSequence([self.seed, int(self._epoch[0]), int(row)]).generate_state(1)[0]
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only (the transforms' RNG): torch.manual_seed also seeds every
                # accelerator's, ~100x the cost, and fork_rng(devices=[]) would not restore those.
                torch.default_generator.manual_seed(int(row_seed))
                return self.transform(img)
        if self.policy == "error":
            raise RecordError(f"record {self.processid[row]} (row {row}): {error}") from None
        self._flags[row] = SKIP_REASONS.index(reason) + 1
        log.warning("skipping record %s (row %d): %s", self.processid[row], row, error)
        return None

    @property
    def skipped(self) -> SkipReport:
        """Distinct records skipped so far (up front and while decoding), by reason."""
        flags = self._flags.numpy()
        report = SkipReport(read=len(self))
        for code, reason in enumerate(SKIP_REASONS, start=1):
            report.add(reason, self.processid[flags == code])
        return report


def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``SpecimenDataset.__getitems__`` already returns the collated batch."""
    return batch


def build_dataloader(
    dataset: SpecimenDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = True,
    drop_last: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """Batches from ``dataset.__getitems__``.

    ``shuffle``: a fresh permutation every epoch, drawn from a generator seeded with ``seed``
    (the same sequence of epoch orders for the same seed). Workers persist across epochs;
    augmentations do not depend on them (each row's are seeded by the dataset's seed, epoch and row).
    Memory is pinned only when an accelerator is present.
    """
    if shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last),
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.accelerator.is_available(),
        persistent_workers=workers,
        prefetch_factor=prefetch_factor if workers else None,
        generator=torch.Generator().manual_seed(seed + 1),
    )
