"""CLIBDModel: image / DNA / text towers, projection heads, a shared embedding space.

``save_pretrained(dir)`` writes ``model.safetensors``, ``config.json`` and
``text_tokenizer/``; ``CLIBDModel.from_pretrained(dir)`` rebuilds the model from those alone
(no training config, data, hub or the towers' original checkpoints), or only the towers a
command needs (``modalities``): towers are built through ``clibd.models.registry``, so the
libraries of the others are never imported.

``config.json``: ``{"format": 1, "model": <ModelConfig as a dict>, "architectures":
{modality: <what the tower was built as>}, "dna_tokenizer": <KmerTokenizer settings, its
cleaning included>, "image_normalization": {"mean": [...], "std": [...]} or null,
"image_view": {"eval_resize": int or null, "pipeline": "clibd" | "original"} or null}`` (the
image mean/std and evaluation view the model was trained with, when known): what a user's new
specimens must go through to be embedded as the model's training and evaluation data were.

``manifest.json`` (written last; ``clibd.atomic``): every file's size and sha256 and the checkpoint
hash; ``from_pretrained`` checks the weights and every other file against it before loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model
from torch import nn

from clibd.atomic import MANIFEST, atomic_directory, chained_sha256, verify_manifest, write_manifest
from clibd.config import MODALITIES, ModelConfig, check_dna_tower
from clibd.data.dna_tokenizer import KmerTokenizer
from clibd.models.finetune import apply_finetune
from clibd.models.registry import build_tower
from clibd.models.weights import CheckpointMismatchError, mismatch_message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST_KIND = "saved model"  # clibd.atomic's manifest: every file's checksum, checked on load
# Batch keys each modality reads (docs/architecture.md, "Batch").
BATCH_KEYS = {"image": ("image",), "dna": ("dna_ids", "dna_mask"), "text": ("text_ids", "text_mask")}
# Config fields that change how weights are obtained or trained, not what the model computes.
_NOT_ARCHITECTURE = {"pretrained", "finetune", "lora", "gradient_checkpointing", "logit_scale_init", "logit_scale_max"}


class CLIBDModel(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        text_tokenizer: PreTrainedTokenizerBase | Path | None = None,
        architectures: Optional[dict[str, dict]] = None,
        modalities: Optional[Sequence[str]] = None,
    ) -> None:
        """``architectures`` (from a saved model) rebuilds the towers with random init and
        loads none of their pretrained weights; ``from_pretrained`` then fills them in.
        ``modalities``: build only these of the enabled towers (None: all); such a model embeds,
        it cannot be saved (:meth:`load_towers` adds the others later). ``text_tokenizer``: see
        :class:`clibd.models.text.TextTower`."""
        super().__init__()
        check_dna_tower(cfg)
        self.cfg = cfg
        self.enabled = tuple(m for m in MODALITIES if getattr(cfg, m).enabled)
        if not self.enabled:
            raise ValueError("model: every modality is disabled; enable at least one of image, dna, text")
        self._text_tokenizer, self._architectures = text_tokenizer, architectures or {}
        self.towers, self.heads = nn.ModuleDict(), nn.ModuleDict()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.dna_tokenizer: Optional[KmerTokenizer] = None
        self.text_tokenizer: Optional[PreTrainedTokenizerBase] = None
        # {"mean": [...], "std": [...]} the images were normalised with in training (saved in config.json).
        self.image_normalization: Optional[dict[str, list[float]]] = None
        # {"eval_resize": ..., "pipeline": ...}: the data.* evaluation view of training (saved in config.json).
        self.image_view: Optional[dict[str, Any]] = None
        # clibd.embed.run_dir.checkpoint_hash of the folder it was loaded from, as its verified manifest
        # records it (None: not loaded, or saved before manifests): the weights are not hashed twice.
        self.checkpoint_hash: Optional[str] = None
        self._add_towers([m for m in self.enabled if modalities is None or m in modalities])

    @property
    def modalities(self) -> tuple[str, ...]:
        """The towers built, in ``MODALITIES`` order."""
        return tuple(m for m in self.enabled if m in self.towers)

    @property
    def left_out(self) -> tuple[str, ...]:
        """Enabled towers not built (``modalities`` of ``__init__`` / ``from_pretrained``)."""
        return tuple(m for m in self.enabled if m not in self.towers)

    def _add_towers(self, names: Sequence[str]) -> None:
        """Build ``names``' towers (through the registry: their libraries are imported now), then
        their heads: towers first, so a seeded model draws the same initial weights as ever."""
        towers = {m: build_tower(m, self.cfg, self._architectures.get(m), self._text_tokenizer) for m in names}
        for name, tower in towers.items():
            tower_cfg = getattr(self.cfg, name)
            apply_finetune(tower, tower_cfg.finetune, tower_cfg.lora, tower.default_lora_targets, f"model.{name}")
            if tower_cfg.gradient_checkpointing:
                tower.enable_gradient_checkpointing()
        # A tower that already ends in the embedding space (the original's DNA head, or a k-mer
        # bag kept as it is) gets no projection.
        heads = {
            name: nn.Identity()
            if getattr(t, "ends_in_embedding_space", False)
            else nn.Linear(t.output_dim, self.cfg.embed_dim)
            for name, t in towers.items()
        }
        self.towers.update(towers)
        self.heads.update(heads)
        if "dna" in towers:
            self.dna_tokenizer = towers["dna"].tokenizer
        if "text" in towers:
            self.text_tokenizer = towers["text"].tokenizer

    # ---- encoding -------------------------------------------------------------------------
    def check_tower(self, modality: str) -> None:
        """Raise ValueError, saying why, when this model cannot embed ``modality``."""
        if modality in self.left_out:
            loaded = ", ".join(self.modalities)
            raise ValueError(f"the {modality} tower of this model was not loaded (loaded: {loaded})")
        if modality not in self.towers:
            enabled = ", ".join(self.enabled)
            raise ValueError(f"this model has no {modality} tower (enabled: {enabled})")

    def _embed(self, modality: str, *inputs: torch.Tensor) -> torch.Tensor:
        self.check_tower(modality)
        return F.normalize(self.heads[modality](self.towers[modality](*inputs)), dim=-1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self._embed("image", image)

    def encode_dna(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._embed("dna", ids, mask)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._embed("text", ids, mask)

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The embedding of every enabled modality whose inputs are in ``batch``, and the
        ``logit_scale`` parameter itself, i.e. the log of the scale (open_clip's forward returns
        ``logit_scale.exp()``; ``clibd.train.loss.ContrastiveLoss`` exponentiates it)."""
        features = {
            m: self._embed(m, *(batch[k] for k in BATCH_KEYS[m]))
            for m in self.modalities
            if all(k in batch for k in BATCH_KEYS[m])
        }
        return features, self.logit_scale

    def clamp_logit_scale(self) -> None:
        """Keep the scale in [1, logit_scale_max] (call after each optimizer step); no-op when that is None."""
        if self.cfg.logit_scale_max is None:
            return
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(self.cfg.logit_scale_max))

    def train(self, mode: bool = True) -> "CLIBDModel":
        super().train(mode)
        for name, tower in self.towers.items():
            if getattr(self.cfg, name).finetune == "frozen":
                tower.eval()  # a frozen tower runs deterministically: no dropout
        return self

    # ---- persistence ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the model whole or not at all (``clibd.atomic.atomic_directory``)."""
        if self.left_out:
            loaded = ", ".join(self.modalities)
            raise ValueError(f"only the {loaded} tower(s) of this model were loaded: load it whole to save it")
        with atomic_directory(directory) as tmp:
            save_model(self, str(tmp / WEIGHTS))
            meta = {
                "format": FORMAT_VERSION,
                "model": dataclasses.asdict(self.cfg),
                "architectures": {name: tower.arch for name, tower in self.towers.items()},
                "dna_tokenizer": self.dna_tokenizer.settings() if self.dna_tokenizer else None,
                "image_normalization": self.image_normalization,
                "image_view": self.image_view,
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            if self.text_tokenizer is not None:
                self.text_tokenizer.save_pretrained(tmp / "text_tokenizer")
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            write_manifest(tmp, MANIFEST_KIND, files, chained_sha256([tmp / "config.json", tmp / WEIGHTS])[:16])
        return Path(directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        expected: Optional[ModelConfig] = None,
        modalities: Optional[Sequence[str]] = None,
    ) -> "CLIBDModel":
        """Load a saved model; with ``expected``, refuse one whose architecture differs. ``modalities``:
        load only these of its towers (the others' weights are not read, their libraries not imported)."""
        directory = Path(directory)
        config_file = directory / "config.json"
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {directory}")
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory}: not a saved CLIBD model (no config.json)")
        verified_hash = check_saved_files(directory)
        try:
            meta = json.loads(config_file.read_text())
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{config_file}: not a readable config.json ({err})") from None
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{config_file}: unsupported format {meta.get('format')!r} (expected {FORMAT_VERSION})")
        cfg: ModelConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), meta["model"]))
        if expected is not None:
            diffs = architecture_differences(cfg, expected)
            if diffs:
                raise CheckpointMismatchError(mismatch_message(directory, "saved model config", diffs))
        # The saved weights replace everything, so never fetch the towers' own checkpoints
        # (the text tower's ``name`` is not read when its architecture is given).
        cfg.image = dataclasses.replace(cfg.image, pretrained=None)
        cfg.dna = dataclasses.replace(cfg.dna, pretrained=None)
        model = cls(cfg, directory / "text_tokenizer", meta["architectures"], modalities)
        model._load_weights(directory / WEIGHTS)
        model.image_normalization = meta.get("image_normalization")
        model.image_view = meta.get("image_view")
        model.checkpoint_hash = verified_hash
        if model.dna_tokenizer is not None:  # absent from models saved before data.dna_cleaning existed
            model.dna_tokenizer.cleaning = (meta.get("dna_tokenizer") or {}).get("cleaning", "clibd")
        return model

    def load_towers(self, directory: str | os.PathLike, modalities: Sequence[str]) -> None:
        """Build the ``modalities`` left out when this model was loaded from ``directory``, and read
        their weights (``clibd serve`` loads the image tower after it starts answering)."""
        new = [m for m in self.left_out if m in modalities]
        self._add_towers(new)
        self._load_weights(Path(directory) / WEIGHTS, only=new)

    def _load_weights(self, weights: Path, only: Optional[Sequence[str]] = None) -> None:
        """Every tensor of ``weights`` but the left-out towers' and heads' (``only``: just those
        modalities' towers and heads); each must fit the model, and every tensor of theirs be there."""
        skipped, kept = _weight_prefixes(self.left_out), _weight_prefixes(only or ())
        wanted = (lambda key: key.startswith(kept)) if only is not None else (lambda key: not key.startswith(skipped))
        try:
            with safe_open(weights, framework="pt") as file:
                state = {key: file.get_tensor(key) for key in file.keys() if wanted(key)}
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights}: cannot be read ({err})") from None
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [key for key in missing if wanted(key)]
        if missing or unexpected:
            raise CheckpointMismatchError(
                f"{weights}: weights do not fit the model built from config.json: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )


def _weight_prefixes(modalities: Sequence[str]) -> tuple[str, ...]:
    """The state-dict key prefixes of these modalities' towers and heads."""
    return tuple(f"{part}.{m}." for m in modalities for part in ("towers", "heads"))


def check_saved_files(directory: Path) -> Optional[str]:
    """Every file of a saved model as ``save_pretrained`` wrote it (its manifest's checksums, the
    weights hashed whole): a flipped bit or a file of another save is refused naming the file. Returns
    the checkpoint hash the manifest records (of the bytes just checked). A model saved before
    manifests existed is loaded with a warning that it was not checked (returns None)."""
    if (directory / MANIFEST).is_file():
        return verify_manifest(directory, MANIFEST_KIND, "saved model", full_check_bytes=None).get("checkpoint_hash")
    else:
        warnings.warn(
            f"{directory}: no {MANIFEST} (saved by an older clibd): its files' checksums cannot be checked; "
            "save it again (CLIBDModel.from_pretrained(...).save_pretrained(...)) to record them",
            stacklevel=3,
        )
        return None


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _NOT_ARCHITECTURE:
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def architecture_differences(found: ModelConfig, expected: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted config fields (towers, sizes, vocabulary, embed_dim, ...) whose values differ."""
    a, b = _flatten(dataclasses.asdict(found)), _flatten(dataclasses.asdict(expected))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}
