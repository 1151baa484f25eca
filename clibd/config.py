"""Typed run configuration: dataclasses, loaded from YAML with dotted overrides.

``load_config("configs/demo.yaml", ["train.lr=1e-4"])`` merges the file and the
overrides onto the dataclass defaults (OmegaConf structured config), so an unknown
or misspelt key fails at once with the key and the file named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


@dataclass
class LoraConfig:
    r: int = 4
    alpha: int = 8
    dropout: float = 0.0
    # Module names (peft ``target_modules``); empty = a sensible default per tower.
    targets: list[str] = field(default_factory=list)


@dataclass
class ImageTowerConfig:
    enabled: bool = True
    backbone: str = "timm"  # timm | open_clip
    name: str = "vit_tiny_patch16_224"  # timm model name or open_clip model name
    # Hub id (hf-hub:...), local weights file or directory, or a timm pretrained tag
    # (augreg_in21k; the published system: augreg2_in21k_ft_in1k, timm's default); None = random init.
    pretrained: Optional[str] = None
    image_size: int = 224
    finetune: str = "full"  # full | lora | frozen
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False


@dataclass
class DnaTowerConfig:
    enabled: bool = True
    k: int = 5
    stride: Optional[int] = None  # None = k (non-overlapping, as BarcodeBERT)
    vocab: str = "barcodebert"  # barcodebert ([MASK],[UNK],kmers) | barcodebert_v1 (<MASK>,<CLS>,<UNK>,kmers)
    max_nucleotides: int = 660
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    # Local HF-format directory or a state-dict file of a BertForMaskedLM; None = random init.
    pretrained: Optional[str] = None
    # mean: masked mean, padding never counted | mean_all: every position, padding included (the original)
    # | kmer_bag: mean k-mer embedding (+ the masked mean when num_layers > 0; docs/dna_recipe.md)
    pooling: str = "mean"
    # linear: pooled last hidden state -> projection head | mlm_softmax (the original): the BERT MLM
    # head's transform (dense + GELU + LayerNorm), Linear(hidden, embed_dim), softmax, then pooled;
    # no projection head after it.
    head: str = "linear"
    attention_mask: bool = True  # False: attention sees the padding k-mers too (the original)
    # barcodebert_v1 only: id of the token prefixed to every sequence; None = <CLS> (1). The original used 0.
    prefix_token_id: Optional[int] = None
    finetune: str = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False


@dataclass
class TextTowerConfig:
    enabled: bool = True
    # transformers model name or local directory (model + tokenizer). None = a BERT built
    # from the size fields below with a WordPiece vocabulary trained on the data's
    # taxonomy strings (for the offline demo).
    name: Optional[str] = "prajjwal1/bert-small"
    hidden_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    intermediate_size: int = 2048
    vocab_size: int = 2000  # only for a tokenizer trained on the data
    # mean (padding left out) | cls | mean_all (every position, padding included: the published system)
    pooling: str = "mean"
    # None = the longest taxonomy string in the data, so no species name is ever cut (published: 20).
    max_length: Optional[int] = None
    template: str = "{order} {family} {genus} {species}"
    missing_word: str = "not_classified"
    finetune: str = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False


@dataclass
class ModelConfig:
    embed_dim: int = 768
    logit_scale_init: float = 14.285714285714286  # 1 / 0.07; stored as log
    logit_scale_max: float = 100.0
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    dna: DnaTowerConfig = field(default_factory=DnaTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)


@dataclass
class SplitRoles:
    """Which dataset splits play which role (REFERENCE.md section 1)."""

    train: list[str] = field(default_factory=lambda: ["pretrain", "train"])
    keys: list[str] = field(default_factory=lambda: ["train", "key_unseen"])
    test_seen: list[str] = field(default_factory=lambda: ["test"])
    test_unseen: list[str] = field(default_factory=lambda: ["test_unseen"])
    val_seen: list[str] = field(default_factory=lambda: ["val"])
    val_unseen: list[str] = field(default_factory=lambda: ["val_unseen"])
    # Splits that are read and counted but play no role (anything else is an "unknown split").
    unused: list[str] = field(default_factory=lambda: ["other_heldout"])


@dataclass
class AugmentConfig:
    enabled: bool = True
    # Shorter side resized to this before the random crop (published: 256); None = crop the image as it is.
    resize_before_crop: Optional[int] = None
    scale_min: float = 0.8  # RandomResizedCrop scale range lower bound (published: 0.08)
    hflip: float = 0.5
    vflip: float = 0.0
    rotate_degrees: float = 0.0
    rotate_fill: int = 255  # grey level of the corners a rotation uncovers (published: 0, black)
    color_jitter: float = 0.1
    # Augment the batch on the training device after the transfer (clibd/data/gpu_augment.py)
    # instead of per image in the loader workers; the loader then serves un-augmented crops.
    on_device: bool = False


@dataclass
class DataConfig:
    # bioscan5m (dataset root) | bioscan1m (TSV + image dir) | hdf5 (published CLIBD file)
    # | tabular (CSV/TSV/parquet + column mapping) | fasta
    format: str = "bioscan5m"
    root: str = "data/demo"
    image_package: str = "cropped_256"
    # tabular: our column name -> the file's column name (e.g. dna_barcode: nucleotides)
    columns: dict[str, str] = field(default_factory=dict)
    # Generate the demo dataset at ``root`` when it is absent (demo configs only).
    demo_specimens: int = 0
    demo_seed: int = 0
    splits: SplitRoles = field(default_factory=SplitRoles)
    bad_records: str = "error"  # error | skip (skips are counted and reported)
    # Ranks every key/query row (splits of keys, test_*, val_* roles) must carry; [] = none.
    required_ranks: list[str] = field(default_factory=lambda: ["order", "family", "genus", "species"])
    cache_dir: str = ".cache/clibd"
    # Image normalisation: BIOSCAN-5M cropped statistics by default; mean 0 and std 1 give the
    # published system's plain [0, 1] pixels (no normalisation).
    mean: list[float] = field(default_factory=lambda: [0.7628, 0.7650, 0.7637])
    std: list[float] = field(default_factory=lambda: [0.1421, 0.1564, 0.1731])
    # Evaluation view: shorter side resized to this, then the centre image_size crop; None = image_size
    # (the whole shorter side). The published system: 256 for a 224 crop.
    eval_resize: Optional[int] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 2
    pin_memory: bool = True


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 20
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    batch_size: int = 500  # per process
    grad_accum: int = 1
    lr: float = 5e-5
    # lr is multiplied by global_batch / lr_reference_batch (paper: 500); 0 = no scaling.
    lr_reference_batch: int = 500
    weight_decay: float = 0.01
    schedule: str = "onecycle"  # onecycle | cosine (linear warm-up + cosine)
    warmup_fraction: float = 0.05
    mixed_precision: str = "no"  # no | bf16 | fp16
    loss_targets: str = "identity"  # identity | label | hierarchical
    label_rank: str = "species"  # rank whose shared labels are positives (label targets)
    # hierarchical targets: weight of each shared rank (ranks left out weigh 0)
    rank_weights: dict[str, float] = field(default_factory=lambda: {"species": 1.0, "genus": 0.3, "family": 0.1})
    eval_every_epochs: int = 1
    best_metric: str = "val_loss"  # val_loss (lower is better) or a retrieval metric key
    # Also run the retrieval protocol on the val split at each validation (keys embedded
    # each time); its keys look like "image->dna/macro/species/top1/harmonic_mean".
    val_retrieval: bool = False
    # Intra-op threads of a CPU-only run; 0 = torch's default (one per core). 1 is fastest
    # on cores shared with other work, where OpenMP threads spin waiting for each other.
    cpu_threads: int = 0
    checkpoint_every_steps: int = 0  # 0 = at the end of every epoch only
    log_every_steps: int = 10
    nan_policy: str = "skip"  # skip (count) | stop (name the step and batch)
    collective_timeout_s: int = 1800
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class EvalConfig:
    split: str = "test"  # test | val
    modalities: list[str] = field(default_factory=lambda: ["image", "dna", "text"])
    ks: list[int] = field(default_factory=lambda: [1, 3, 5])
    batch_size: int = 256
    index: str = "flat"  # flat | ivf | ivfpq | hnsw (clibd/index/faiss_index.py)
    # Embedding precision: auto (bf16 on a CUDA GPU, fp32 on a CPU) | fp32 | bf16 (clibd/embed/encoder.py).
    precision: str = "auto"
    compile: bool = False  # torch.compile with frozen weights: ~15-30 s per tower, pays for large splits
    max_per_split: Optional[int] = None
    # Also score the fused image+DNA features as the published system does: their mean ("image_dna_mean")
    # and concatenation ("image_dna_concat") as queries and keys, and every key modality stacked ("all").
    fused_pairs: bool = False


@dataclass
class QualityConfig:
    """Minimums a new specimen (and a reference barcode) must meet; docs/quality.md says why."""

    min_valid_nt: int = 200  # A/C/G/T count; BOLD's ID engine needs >= 100 bp overlap, BARCODE >= 500
    max_ambiguous: float = 0.05  # N + IUPAC codes over all bases, end padding of N excluded; BARCODE: 0.01
    min_object_contrast: float = 40.0  # grey levels the darkest object stands below the well; below = empty_well
    min_focus_ratio: float = 0.8  # object edge sharpness over the well highlights' (floor 10); below = blurry


@dataclass
class PretrainConfig:
    """Masked-token pretraining of the DNA tower (``clibd pretrain-dna``), BarcodeBERT-style."""

    splits: list[str] = field(default_factory=lambda: ["pretrain", "other_heldout"])  # [] = every row
    epochs: int = 35
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    batch_size: int = 128  # per process
    grad_accum: int = 1
    lr: float = 1e-4  # OneCycle peak
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # OneCycle pct_start
    mask_ratio: float = 0.5  # of the maskable tokens (never UNK, padding or CLS)
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    log_every_steps: int = 50
    # HF BertForMaskedLM directory, rewritten at the end of every epoch; a training config
    # uses it as ``model.dna.pretrained``.
    out_dir: str = "runs/${name}/dna_mlm"


@dataclass
class Config:
    name: str = "clibd"
    out_dir: str = "runs/${name}"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as err:
        key = err.full_key or err.key
        raise ConfigError(f"{source}: unknown config key '{key}'") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{source}: bad value for '{key}': {err.msg}") from None


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Defaults <- YAML file <- ``key.sub=value`` overrides, checked against the schema."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        cfg = _merge(cfg, OmegaConf.load(path), str(path))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
    OmegaConf.resolve(cfg)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config (what the run actually used) next to its outputs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_yaml(cfg))


def config_from_dict(data: dict) -> Config:
    return OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, "checkpoint config"))  # type: ignore[return-value]
