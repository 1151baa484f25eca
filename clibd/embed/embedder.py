"""Embed new specimens with a trained checkpoint: image files, barcodes, taxonomy strings."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clibd.config import MODALITIES, ImagePipeline, QualityConfig
from clibd.data.quality import ANALYSIS_SIDE, photo_quality
from clibd.data.transforms import ImageDecodeError, build_normalize, build_pil_transform, decode_image, decode_side
from clibd.embed.encoder import InferenceEncoder
from clibd.embed.run_dir import checkpoint_hash, run_image_view, run_normalisation
from clibd.models.clibd_model import CLIBDModel
from clibd.progress import progress

NORM_TOLERANCE = 0.05  # |norm - 1| of an embedding row; bf16 rounding stays far below it


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _ImageFiles(Dataset):
    """Decode + transform (+ quality-check) one input: ``(i, tensor, quality)``; a failure
    becomes ``(i, None, problem)`` (in words, without the file name), never an exception."""

    def __init__(
        self,
        inputs: Sequence[str | Path | Image.Image],
        transform: Callable,
        min_side: int,
        rules: Optional[QualityConfig],
        decode_side: Optional[int],
    ) -> None:
        """``min_side``: the model's input size (the quality check's minimum); ``decode_side``: the
        shorter side JPEGs keep when decoded (:meth:`Embedder.photo_decode_side`; None: the whole image)."""
        self.inputs, self.transform, self.min_side, self.rules = list(inputs), transform, min_side, rules
        self.decode_side = decode_side

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[int, Optional[torch.Tensor], str]:
        item = self.inputs[i]
        try:
            if isinstance(item, Image.Image):
                image = item.convert("RGB")
            else:
                image = decode_image(Path(item).read_bytes(), str(item), self.decode_side)
            quality = "" if self.rules is None else photo_quality(image, self.min_side, self.rules)
            return i, self.transform(image), quality
        except ImageDecodeError as err:
            return i, None, err.problem
        except OSError as err:
            return i, None, f"cannot read the file ({err.strerror or type(err).__name__})"


def _collate_images(items: list) -> tuple[list[int], Optional[torch.Tensor], list[str], list[tuple[int, str]]]:
    good = [(i, x, quality) for i, x, quality in items if x is not None]
    failed = [(i, msg) for i, x, msg in items if x is None]
    batch = torch.stack([x for _, x, _ in good]) if good else None
    return [i for i, _, _ in good], batch, [quality for _, _, quality in good], failed


class ImageEmbeddings(NamedTuple):
    """What :meth:`Embedder.embed_images` returns: rows in input order, unreadable inputs left out."""

    embeddings: np.ndarray  # [N, D] float32, L2-normalised
    ids: list[str]
    skipped: list[tuple[str, str]]  # (input, reason) of every input that could not be read or decoded
    quality: list[str]  # per embedded row: clibd.data.quality.photo_quality ("" = passed or not checked)


class PhotoResults(NamedTuple):
    """What :meth:`Embedder.embed_photos` returns: one row per input, in input order."""

    embeddings: np.ndarray  # [N, D] float32; NaN rows: not embedded (``problem``) or not finite
    quality: list[str]  # clibd.data.quality.photo_quality of each decoded photo ("" = passed or not checked)
    problems: list[Optional[str]]  # why an input could not be read or decoded (None: it was)


def image_id(item: str | Path | Image.Image, position: int) -> str:
    """A file's id is its name without the extension; an in-memory image's is ``image-<position>``."""
    return f"image-{position}" if isinstance(item, Image.Image) else Path(item).stem


def input_name(item: str | Path | Image.Image, position: int) -> str:
    """How a skipped input is reported: its path, or ``image-<position>`` for an in-memory image."""
    return f"image-{position}" if isinstance(item, Image.Image) else str(item)


def unit_rows(embeddings: np.ndarray, tolerance: float = NORM_TOLERANCE) -> np.ndarray:
    """Which rows are unit vectors, as every embedding is: a damaged weight that overflows makes a
    zero or NaN row after normalisation (x / inf), and such a row must never look like an answer."""
    return np.abs(np.linalg.norm(embeddings.astype(np.float64), axis=1) - 1.0) <= tolerance


class Embedder:
    """Embed new specimens with a trained checkpoint (inference mode, batched, eval transform).

    ``Embedder("runs/demo/model").embed_images(["a.jpg", ...])``
    ``-> ImageEmbeddings(emb [N,D], ids, skipped, quality)``;
    ``embed_dna(sequences, ids) -> (emb, ids)``; ``embed_text(strings) -> emb``.
    Embeddings are float32, L2-normalised, in input order (skipped inputs left out); a row the
    model could not make a unit vector of (non-finite: damaged weights) is NaN, never zeros.

    Image normalisation: ``mean``/``std`` if given, else the checkpoint's config.json
    ``image_normalization``, else ``data.mean``/``data.std`` of the run's ``config.yaml``
    (:func:`find_run_config`), else the BIOSCAN-5M defaults (with a warning).
    The image size is the checkpoint's; the view (resize to ``eval_resize``, then the centre crop,
    through ``data.image_pipeline``'s steps) takes the given ``eval_resize``, else the model's
    config.json ``image_view``, else the run's ``data.eval_resize`` (:func:`run_image_view`).
    Text is padded to the model's ``text.max_length`` when it has one (the published model's
    ``mean_all`` pooling averages the padding too).
    ``precision`` (auto | fp32 | bf16) and ``compile``: see :class:`clibd.embed.encoder.InferenceEncoder`.
    ``modalities``: load only these towers of a checkpoint (None: all it has), and so only their
    libraries (``clibd.models.registry``): a command with barcodes alone imports no image library.
    ``background``: of those, the towers to load in a background thread, so the others embed at once
    (``clibd serve`` answers barcodes while the image tower's libraries import); embedding with one
    of them waits until it is ready (:meth:`wait_for_towers`).
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
        eval_resize: Optional[int] = None,
        modalities: Optional[Sequence[str]] = None,
        background: Sequence[str] = (),
    ) -> None:
        run: Optional[Path] = None
        wanted = list(MODALITIES if modalities is None else modalities)
        if isinstance(model_or_checkpoint_dir, (str, Path)):
            run = Path(model_or_checkpoint_dir)
            at_once = [m for m in wanted if m not in background] if background else modalities
            model = CLIBDModel.from_pretrained(run, modalities=at_once)
            self.checkpoint_hash: Optional[str] = model.checkpoint_hash or checkpoint_hash(run)
        elif background:
            raise ValueError("towers load in the background from a checkpoint directory, not from a model object")
        else:
            self.checkpoint_hash, model = None, model_or_checkpoint_dir
        if background and compile:
            raise ValueError("compile needs every tower at once: load none in the background")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.encode = InferenceEncoder(self.model, self.device, precision, compile, batch_size, in_place=True)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size = int(self.model.cfg.image.image_size)
        self.later = tuple(m for m in background if m in wanted and m in getattr(model, "left_out", ()))
        self.transform: Optional[Callable] = None  # per image
        self.normalize: Optional[Callable] = None  # per batch, as the dataset does
        self.pipeline: ImagePipeline = "clibd"
        if self.has_images or "image" in self.later:  # only then is the run's config read
            if run is not None and (mean is None or std is None):
                mean, std = run_normalisation(run, mean, std)
            saved = getattr(model, "image_view", None)
            view = run_image_view(run, saved) if run is not None else (saved or {})
            eval_resize = eval_resize or view.get("eval_resize")
            self.pipeline = view.get("pipeline", "clibd")
        self.decode_side = decode_side(self.image_size, None, eval_resize, self.pipeline)
        if self.has_images:  # the views import torchvision
            self._image_view(mean, std, eval_resize)
        self._lock = threading.Lock()  # a batch runs, or towers loaded later are put in place
        self._ready, self._failed = threading.Event(), None
        if not self.later:
            self._ready.set()
            return
        args = (run, mean, std, eval_resize)
        threading.Thread(target=self._load_later, args=args, name="clibd-towers", daemon=True).start()

    def _image_view(
        self, mean: Optional[Sequence[float]], std: Optional[Sequence[float]], eval_resize: Optional[int]
    ) -> None:
        self.transform = build_pil_transform(self.image_size, None, eval_resize, self.pipeline)
        self.normalize = build_normalize(mean, std)

    def _load_later(
        self, run: Path, mean: Optional[Sequence[float]], std: Optional[Sequence[float]], eval_resize: Optional[int]
    ) -> None:
        try:
            self.model.load_towers(run, self.later)
            if "image" in self.later:
                self._image_view(mean, std, eval_resize)
            with self._lock:
                self.model.to(self.device).eval()
                if self.encode.prepared:  # cast (bf16) the new towers as the others were
                    self.encode.refresh(self.model)
        except Exception as err:  # raised where a tower is waited for
            self._failed = err
        finally:
            self._ready.set()

    def wait_for_towers(self) -> None:
        """Block until the towers loading in the background are in place; raise if they failed to load."""
        self._ready.wait()
        if self._failed is not None:
            raise RuntimeError(f"loading the {', '.join(self.later)} tower(s) failed: {self._failed}") from self._failed

    @property
    def loading(self) -> tuple[str, ...]:
        """The towers still loading in the background."""
        return () if self._ready.is_set() else self.later

    def _require(self, modality: str) -> None:
        if modality in self.later:
            self.wait_for_towers()
        self.model.check_tower(modality)

    @property
    def has_images(self) -> bool:
        return "image" in self.model.modalities

    @property
    def dim(self) -> int:
        return int(self.model.cfg.embed_dim)

    def photo_decode_side(self, rules: Optional[QualityConfig]) -> Optional[int]:
        """The shorter side a JPEG keeps when decoded: the evaluation view's resize, or the quality
        statistics' ``ANALYSIS_SIDE`` when photos are checked (also for photos decoded elsewhere);
        None: the whole image (``data.image_pipeline: original``)."""
        if self.decode_side is None or rules is None:
            return self.decode_side
        return max(self.decode_side, ANALYSIS_SIDE)

    def _encode(self, batch: dict[str, torch.Tensor], modality: str) -> np.ndarray:
        """Embeddings of one batch; a row that is not a unit vector (:func:`unit_rows`) comes back NaN."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._lock:
            out = self.encode(batch, modality).cpu().numpy().astype(np.float32, copy=False)
        out[~unit_rows(out)] = np.nan
        return out

    def _stack(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_photos(
        self, inputs: Sequence[str | Path | Image.Image], rules: Optional[QualityConfig] = None, bar: bool = True
    ) -> PhotoResults:
        """One row per input (:class:`PhotoResults`): decoded (files in the loader workers), quality-checked
        with ``rules`` (:func:`clibd.data.quality.photo_quality`; flagged photos are embedded all the same,
        their ``quality`` says why they should not be trusted) and embedded. ``bar``: a progress bar of
        its own (off when a caller's bar counts these photos)."""
        self._require("image")
        inputs = list(inputs)
        files = _ImageFiles(inputs, self.transform, self.image_size, rules, self.photo_decode_side(rules))
        loader = DataLoader(files, batch_size=self.batch_size, collate_fn=_collate_images, num_workers=self.num_workers)
        embeddings = np.full((len(inputs), self.dim), np.nan, dtype=np.float32)
        quality, problems = [""] * len(inputs), [None] * len(inputs)
        for positions, images, flags, failed in progress(
            loader, desc="embed images", disable=not bar or len(loader) < 2
        ):
            for i, problem in failed:
                problems[i] = problem
            if images is not None:
                embeddings[positions] = self._encode({"image": self.normalize(images)}, "image")
                for i, flag in zip(positions, flags):
                    quality[i] = flag
        return PhotoResults(embeddings, quality, problems)

    def embed_images(
        self, inputs: Sequence[str | Path | Image.Image], rules: Optional[QualityConfig] = None
    ) -> ImageEmbeddings:
        """:meth:`embed_photos` without the inputs that could not be read or decoded: ``skipped`` lists
        ``(input, reason)`` for each (also issued as one warning). Rows are L2-normalised, or NaN where
        the model gave a non-finite embedding."""
        inputs = list(inputs)
        result = self.embed_photos(inputs, rules)
        read = [i for i, problem in enumerate(result.problems) if problem is None]
        skipped = [(input_name(inputs[i], i), problem) for i, problem in enumerate(result.problems) if problem]
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} of {len(inputs)} images: "
                + "; ".join(f"{name}: {why}" for name, why in skipped),
                stacklevel=2,
            )
        return ImageEmbeddings(
            result.embeddings[read], [image_id(inputs[i], i) for i in read], skipped, [result.quality[i] for i in read]
        )

    def embed_dna(self, sequences: Sequence[str], ids: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list[str]]:
        """Barcodes -> embeddings (tokenised with the checkpoint's own k-mer tokenizer)."""
        self._require("dna")
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
        self._require("text")
        strings = list(strings)
        length = self.model.cfg.text.max_length
        # The model's fixed text length (evaluation pads to it: clibd.data.text.encode_taxonomy), else the longest.
        padding = {"padding": True, "truncation": True}
        if length is not None:
            padding = {"padding": "max_length", "max_length": length, "truncation": True}
        parts = []
        for start in range(0, len(strings), self.batch_size):
            tokens = self.model.text_tokenizer(strings[start : start + self.batch_size], **padding, return_tensors="pt")
            parts.append(self._encode({"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"]}, "text"))
        return self._stack(parts)
