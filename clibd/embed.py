"""Embeddings from a trained checkpoint: of a dataset (evaluation, split across processes and
cached) and of new specimens (``Embedder``: image files, barcodes, taxonomy strings)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from clibd.inference import InferenceEncoder, batch_inputs

MODALITIES = ("image", "dna", "text")


def checkpoint_hash(checkpoint_dir: str | Path) -> str:
    """sha256 (first 16 hex) of the checkpoint's weights and config: what embeddings depend on."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(checkpoint_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint_dir} has no {name}")
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def table_hash(table: pd.DataFrame) -> str:
    """Content hash of a specimen table (values, column names and order; not the index)."""
    digest = hashlib.sha256("\0".join(map(str, table.columns)).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def encode_batch(model: torch.nn.Module, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
    """The ``modality`` embedding of a collated batch, as the model computes it (no cast, no compile)."""
    return getattr(model, f"encode_{modality}")(*batch_inputs(batch, modality))


def shard(n: int, rank: int, world: int) -> range:
    """Contiguous rows of process ``rank``: shard sizes differ by at most one."""
    return range(rank * n // world, (rank + 1) * n // world)


def _identity(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


@torch.inference_mode()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    modality: str,
    batch_size: int,
    accelerator: Any = None,
    num_workers: int = 0,
    encoder: Optional[InferenceEncoder] = None,
    progress: bool = True,
) -> np.ndarray:
    """float32 ``[len(dataset), D]`` embeddings in dataset order, on every process.

    ``dataset.__getitems__(rows)`` returns the batch dict (``SpecimenDataset``), with
    ``index`` = the rows served; a row it drops (a bad record under ``bad_records=skip``)
    stays NaN. Under ``accelerate launch`` each process embeds a contiguous shard; the
    shards are padded to equal length, gathered, and the padding dropped, so every rank
    gets the same array as a single-process run. ``encoder`` (default: the model as it is
    in fp32 on a CPU, bf16 on a GPU) is built once per evaluation to set precision and
    compile (:class:`clibd.inference.InferenceEncoder`).
    """
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    n, dim = len(dataset), int(model.cfg.embed_dim)
    rows = shard(n, rank, world)
    loader = DataLoader(
        Subset(dataset, rows), batch_size=batch_size, collate_fn=_identity, num_workers=num_workers
    )
    local = torch.full((len(rows), dim), float("nan"), device=device)
    was_training = model.training
    model.eval()
    encode = encoder or InferenceEncoder(model, device)
    for batch in tqdm(loader, desc=f"embed {modality}", disable=not progress or rank != 0, leave=False):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if len(batch["index"]):
            local[batch["index"] - rows.start] = encode(batch, modality)
    model.train(was_training)
    if world == 1:
        return local.cpu().numpy()
    longest = -(-n // world)
    padded = torch.zeros((longest, dim), device=device, dtype=torch.float32)
    padded[: len(local)] = local
    gathered = accelerator.gather(padded).reshape(world, longest, dim).cpu()
    return torch.cat([gathered[r, : len(shard(n, r, world))] for r in range(world)]).numpy()


def cached_embeddings(
    cache_dir: str | Path, key: dict[str, Any], compute: Callable[[], np.ndarray], accelerator: Any = None
) -> np.ndarray:
    """Load ``<cache_dir>/embeddings/<hash of key>.npy`` or compute it (on every process: the
    work is distributed) and let the main process write it atomically, with the key beside."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "embeddings" / f"{name}.npy"
    hit = path.is_file()
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        hit = broadcast_object_list([hit])[0]  # every rank takes the same branch
    if hit:
        return np.load(path)
    emb = compute()
    if accelerator is None or accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, emb)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(key, indent=1, sort_keys=True))
    return emb


class _ImageFiles(Dataset):
    """Decode + transform one input; a failure becomes ``(i, None, message)``, never an exception."""

    def __init__(self, inputs: Sequence[str | Path | Image.Image], transform: Callable, min_side: int) -> None:
        self.inputs, self.transform, self.min_side = list(inputs), transform, min_side

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[int, Optional[torch.Tensor], str]:
        from clibd.data.transforms import ImageDecodeError, decode_image

        item = self.inputs[i]
        try:
            if isinstance(item, Image.Image):
                image = item.convert("RGB")
            else:
                image = decode_image(Path(item).read_bytes(), str(item), self.min_side)
            return i, self.transform(image), ""
        except (OSError, ImageDecodeError) as err:
            return i, None, str(err)


def _collate_images(items: list) -> tuple[list[int], Optional[torch.Tensor], list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, msg) for i, x, msg in items if x is None]
    return [i for i, _ in good], torch.stack([x for _, x in good]) if good else None, failed


def image_id(item: str | Path | Image.Image, position: int) -> str:
    """A file's id is its name without the extension; an in-memory image's is ``image-<position>``."""
    return f"image-{position}" if isinstance(item, Image.Image) else Path(item).stem


def input_name(item: str | Path | Image.Image, position: int) -> str:
    """How a skipped input is reported: its path, or ``image-<position>`` for an in-memory image."""
    return f"image-{position}" if isinstance(item, Image.Image) else str(item)


class Embedder:
    """Embed new specimens with a trained checkpoint (inference mode, batched, eval transform).

    ``Embedder("runs/demo/model").embed_images(["a.jpg", ...]) -> (emb [N,D], ids, skipped)``;
    ``embed_dna(sequences, ids) -> (emb, ids)``; ``embed_text(strings) -> emb``.
    Embeddings are float32, L2-normalised, in input order (skipped inputs left out).

    Image normalisation: ``mean``/``std`` if given, else ``data.mean``/``data.std`` of the
    run's ``config.yaml`` (:func:`find_run_config`), else the BIOSCAN-5M defaults (with a warning). The image size is the checkpoint's.
    ``precision`` (auto | fp32 | bf16) and ``compile``: see :class:`clibd.inference.InferenceEncoder`.
    """

    def __init__(
        self,
        model_or_checkpoint_dir: torch.nn.Module | str | Path,
        device: str = "auto",
        batch_size: int = 64,
        precision: str = "auto",
        compile: bool = False,
        num_workers: int = 0,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        from clibd.data.transforms import build_normalize, build_pil_transform
        from clibd.models.clibd_model import CLIBDModel

        if isinstance(model_or_checkpoint_dir, (str, Path)):
            self.checkpoint_hash: Optional[str] = checkpoint_hash(model_or_checkpoint_dir)
            model = CLIBDModel.from_pretrained(model_or_checkpoint_dir)
            if mean is None or std is None:
                mean, std = _run_normalisation(Path(model_or_checkpoint_dir), mean, std)
        else:
            self.checkpoint_hash, model = None, model_or_checkpoint_dir
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.encode = InferenceEncoder(self.model, self.device, precision, compile, batch_size, in_place=True)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size = int(self.model.cfg.image.image_size)
        self.transform = build_pil_transform(self.image_size)  # per image, uint8
        self.normalize = build_normalize(mean, std)  # per batch, as the dataset does

    @property
    def dim(self) -> int:
        return int(self.model.cfg.embed_dim)

    def _encode(self, batch: dict[str, torch.Tensor], modality: str) -> np.ndarray:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.encode(batch, modality).cpu().numpy()

    def _stack(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_images(
        self, inputs: Sequence[str | Path | Image.Image]
    ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """Returns ``(embeddings, ids, skipped)``; ``skipped`` lists ``(input, reason)`` for every
        input that could not be read or decoded (also issued as one warning)."""
        inputs = list(inputs)
        files = _ImageFiles(inputs, self.transform, self.image_size)
        loader = DataLoader(files, batch_size=self.batch_size, collate_fn=_collate_images, num_workers=self.num_workers)
        parts, ids, skipped = [], [], []
        for positions, images, failed in tqdm(loader, desc="embed images", leave=False, disable=len(loader) < 2):
            skipped += [(input_name(inputs[i], i), msg) for i, msg in failed]
            if images is not None:
                parts.append(self._encode({"image": self.normalize(images)}, "image"))
                ids += [image_id(inputs[i], i) for i in positions]
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} of {len(inputs)} images: " + "; ".join(f"{name}: {why}" for name, why in skipped),
                stacklevel=2,
            )
        return self._stack(parts), ids, skipped

    def embed_dna(self, sequences: Sequence[str], ids: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list[str]]:
        """Barcodes -> embeddings (tokenised with the checkpoint's own k-mer tokenizer)."""
        sequences = list(sequences)
        ids = [f"dna-{i}" for i in range(len(sequences))] if ids is None else list(ids)
        if len(ids) != len(sequences):
            raise ValueError(f"{len(ids)} ids for {len(sequences)} sequences")
        encoding = self.model.dna_tokenizer(sequences)
        parts = []
        for start in range(0, len(sequences), self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = {
                "dna_ids": torch.from_numpy(encoding.ids[rows].astype(np.int64)),
                "dna_mask": torch.from_numpy(encoding.attention_mask[rows].astype(np.int64)),
            }
            parts.append(self._encode(batch, "dna"))
        return self._stack(parts), ids

    def embed_text(self, strings: Sequence[str]) -> np.ndarray:
        """Taxonomy strings (e.g. ``"Diptera Sciaridae Bradysia not_classified"``) -> embeddings."""
        strings = list(strings)
        parts = []
        for start in range(0, len(strings), self.batch_size):
            tokens = self.model.text_tokenizer(
                strings[start : start + self.batch_size], padding=True, truncation=True, return_tensors="pt"
            )
            parts.append(self._encode({"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"]}, "text"))
        return self._stack(parts)


def find_run_config(checkpoint_dir: str | Path) -> Optional[Path]:
    """The run's ``config.yaml`` in the checkpoint folder or up to three folders above it
    (``python train.py`` writes OUT/config.yaml, OUT/model and OUT/checkpoints/<name>/model)."""
    folder = Path(checkpoint_dir).resolve()
    for candidate in (folder, *list(folder.parents)[:3]):
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    return None


def _run_normalisation(
    checkpoint_dir: Path, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
) -> tuple[Sequence[float], Sequence[float]]:
    from clibd.config import DataConfig, load_config

    found = find_run_config(checkpoint_dir)
    if found is not None:
        data = load_config(found).data
        return mean or data.mean, std or data.std
    warnings.warn(
        f"no run config.yaml at or above {checkpoint_dir}: normalising images with the BIOSCAN-5M "
        "mean/std defaults; pass mean= and std= if the model was trained with others",
        stacklevel=3,
    )
    return mean or DataConfig().mean, std or DataConfig().std
