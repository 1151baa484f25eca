"""Typed run configuration: dataclasses, loaded from YAML with dotted overrides.

``load_config("configs/demo.yaml", ["train.lr=1e-4"])`` merges the file and the
overrides onto the dataclass defaults (OmegaConf structured config), so an unknown
or misspelt key fails at once with the key and the file named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from clibd.taxonomy import EVAL_RANKS

# Choice fields are Literals: OmegaConf 2.4 checks them on every merge and names the key and
# the allowed values in its error.
Finetune = Literal["full", "lora", "frozen"]
MixedPrecision = Literal["no", "bf16", "fp16"]
# Embedding precision: auto (bf16 on a CUDA GPU, fp32 on a CPU) | fp32 | bf16 (clibd/embed/encoder.py).
Precision = Literal["auto", "fp32", "bf16"]
# Contrastive targets (clibd/train/loss.py): each sample itself | samples sharing train.label_rank
# | every shared rank weighted by train.rank_weights.
LossTargets = Literal["identity", "label", "hierarchical"]
Rank = Literal[EVAL_RANKS]  # type: ignore[valid-type]
DnaPooling = Literal["mean", "mean_all", "kmer_bag"]
DnaHead = Literal["linear", "mlm_softmax", "identity"]
EvalSplit = Literal["test", "val"]  # the query splits of the retrieval protocol (docs/datasets.md)
# How barcodes are cleaned before k-mer tokenisation (clibd/data/dna_tokenizer.py): clibd upper-cases,
# removes gaps and strips trailing Ns | original (the published code) does none of this.
DnaCleaning = Literal["clibd", "original"]
# How images become pixels (clibd/data/transforms.py): clibd decodes JPEGs at a reduced DCT scale and
# resizes the uint8 image | original decodes the whole image, converts it to float first (ToTensor)
# and resizes, crops and rotates the float tensor, as the published code composes it.
ImagePipeline = Literal["clibd", "original"]
# Retrieval queries (and keys) without a label at a rank: left out at that rank | scored as one more
# class, "not_classified", as the published evaluation does (docs/fidelity.md).
Unlabelled = Literal["drop", "class"]

# The three towers, in the order every table, loss pair and results file lists them.
MODALITIES = ("image", "dna", "text")
# What a specimen itself brings (a photo, a barcode); text is one per taxon, not per specimen.
SPECIMEN_MODALITIES = ("image", "dna")
# Retrieval: the two query roles (seen / unseen species) and their harmonic mean.
QUERY_ROLES = ("seen", "unseen")
HARMONIC_MEAN = "harmonic_mean"
RETRIEVAL_ROLES = (*QUERY_ROLES, HARMONIC_MEAN)
RETRIEVAL_AVERAGES = ("macro", "micro")
# train.best_metric: these, or a retrieval key "<query>-><key>/<avg>/<rank>/top<k>/<role>".
# data.split: the table's own split column | the BIOSCAN-5M rules on its labels | else a split file's path.
SPLIT_COLUMN, SPLIT_AUTO = "column", "auto"
LOSS_METRIC = "val_loss"
MEAN_TOP1 = "mean_top1"  # micro and macro top-1 averaged over every pair, query role and rank (docs/training.md)


@dataclass
class LoraConfig:
    r: int = 4
    alpha: int = 8
    dropout: float = 0.0
    # Module names (peft ``target_modules``); empty = a sensible default per tower.
    targets: list[str] = field(default_factory=list)


@dataclass
class TowerConfig:
    """The fields every tower has: whether it exists and how its weights are trained."""

    enabled: bool = True
    finetune: Finetune = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    # Multiplies the training learning rate for this tower and its projection head, e.g. a DNA
    # tower that starts from a fitted k-mer table (docs/dna_recipe.md) beside a text tower
    # trained from scratch.
    lr_scale: float = 1.0


@dataclass
class ImageTowerConfig(TowerConfig):
    backbone: Literal["timm", "open_clip"] = "timm"
    name: str = "vit_tiny_patch16_224"  # timm model name or open_clip model name
    # Hub id (hf-hub:...), local weights file or directory, or a timm pretrained tag
    # (augreg_in21k; the published system: augreg2_in21k_ft_in1k, timm's default); None = random init.
    pretrained: Optional[str] = None
    image_size: int = 224


@dataclass
class DnaTowerConfig(TowerConfig):
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
    # random | kmer_spectral: a model built for training (not resumed, no `pretrained`) first fits
    # its k-mer table on the training rows' barcodes, without their labels, as `clibd pretrain-dna`
    # with pretrain.objective=kmer_spectral does (docs/dna_recipe.md).
    init: Literal["random", "kmer_spectral"] = "random"
    # mean: masked mean, padding never counted | mean_all: every position, padding included (the original)
    # | kmer_bag: mean k-mer embedding (+ the masked mean when num_layers > 0; docs/dna_recipe.md)
    pooling: DnaPooling = "mean"
    # linear: pooled last hidden state -> projection head | mlm_softmax (the original): the BERT MLM
    # head's transform (dense + GELU + LayerNorm), Linear(hidden, embed_dim), softmax, then pooled;
    # no projection head after it | identity: the pooled output is the embedding, no projection
    # head (hidden_size must equal model.embed_dim; keeps a fitted k-mer bag's geometry).
    head: DnaHead = "linear"
    attention_mask: bool = True  # False: attention sees the padding k-mers too (the original)
    # barcodebert_v1 only: id of the token prefixed to every sequence; None = <CLS> (1). The original used 0.
    prefix_token_id: Optional[int] = None
    # The k-mers read at each token start, each a '1' (base read) / '0' (skipped) string with k '1's and
    # its own block of the vocabulary, e.g. [11111111, 11011011011] (the second skips codons' third
    # bases); [] = one contiguous k-mer. For the bag (pooling kmer_bag): tokens of one pattern, then
    # the next. docs/dna_recipe.md.
    kmer_patterns: list[str] = field(default_factory=list)
    # Weight of each pattern's block in the kmer_spectral table fit, one per pattern; [] = 1 each.
    kmer_pattern_weights: list[float] = field(default_factory=list)
    # Start each barcode at its first whole codon (of the 3 frames, the one with fewest TAA/TAG
    # stops), so with stride 3 every token starts at a codon's first base.
    reading_frame: bool = False


@dataclass
class TextTowerConfig(TowerConfig):
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
    pooling: Literal["mean", "mean_all", "cls"] = "mean"
    # None = the longest taxonomy string in the data, so no species name is ever cut (published: 20).
    max_length: Optional[int] = None
    template: str = "{order} {family} {genus} {species}"
    missing_word: str = "not_classified"


@dataclass
class ModelConfig:
    embed_dim: int = 768
    logit_scale_init: float = 14.285714285714286  # 1 / 0.07; stored as log
    # The scale is clamped to [1, logit_scale_max] after every step; None = never clamped
    # (the published recipe).
    logit_scale_max: Optional[float] = 100.0
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    dna: DnaTowerConfig = field(default_factory=DnaTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)


@dataclass
class SplitRoles:
    """Which dataset splits play which role (docs/datasets.md, "Splits and roles")."""

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
    format: Literal["bioscan5m", "bioscan1m", "hdf5", "tabular", "fasta"] = "bioscan5m"
    root: str = "data/demo"
    image_package: str = "cropped_256"
    # tabular: our column name -> the file's column name (e.g. dna_barcode: nucleotides)
    columns: dict[str, str] = field(default_factory=dict)
    # Generate the demo dataset at ``root`` when it is absent (demo configs only).
    demo_specimens: int = 0
    demo_seed: int = 0
    splits: SplitRoles = field(default_factory=SplitRoles)
    # Where each row's split name comes from: "column" (the table's own split column) | "auto"
    # (any labelled table split by the BIOSCAN-5M rules, seeded by split_seed: unseen species held
    # out, seen species into train / val / test; clibd/data/species_split.py) | a split file
    # (processid<TAB>split), as `python train.py` writes OUT/split.tsv for an auto split and names
    # in OUT/config.yaml, so that evaluating the run reads the same rows in the same roles.
    split: str = "column"
    split_seed: int = 0
    bad_records: Literal["error", "skip"] = "error"  # skip: skips are counted and reported
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
    image_pipeline: ImagePipeline = "clibd"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Saved with a trained model (config.json "dna_tokenizer"), so every later use of it cleans alike.
    dna_cleaning: DnaCleaning = "clibd"
    num_workers: int = 2
    pin_memory: bool = True


@dataclass
class OptimConfig:
    """The optimiser and run block shared by contrastive training and DNA pretraining."""

    seed: int = 0
    epochs: int = 20
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    batch_size: int = 500  # per process
    grad_accum: int = 1
    lr: float = 5e-5  # peak
    # lr is multiplied by global_batch / lr_reference_batch (paper: 500); 0 = no scaling.
    lr_reference_batch: int = 500
    weight_decay: float = 0.01
    # False: no decay on biases, norms and the logit scale; True: on every parameter (paper).
    decay_all_params: bool = False
    schedule: Literal["onecycle", "cosine"] = "onecycle"  # cosine = linear warm-up + cosine
    warmup_fraction: float = 0.05  # OneCycle pct_start; the cosine schedule's warm-up share
    # OneCycle cycles AdamW's beta1 between 0.85 and 0.95 against the lr (paper: false).
    cycle_momentum: bool = True
    mixed_precision: MixedPrecision = "no"
    log_every_steps: int = 10


@dataclass
class TrainConfig(OptimConfig):
    loss_targets: LossTargets = "identity"
    label_rank: Rank = "species"  # rank whose shared labels are positives (label targets)
    # hierarchical targets: weight of each shared rank (ranks left out weigh 0)
    rank_weights: dict[str, float] = field(default_factory=lambda: {"species": 1.0, "genus": 0.3, "family": 0.1})
    # Clip the global gradient norm to this value; None = no clipping. Its total norm also
    # detects non-finite gradients (train.nan_policy).
    grad_clip_norm: Optional[float] = None
    eval_every_epochs: int = 1
    # val_loss (lower is better), a retrieval metric key such as
    # "image->dna/macro/species/top1/harmonic_mean", or mean_top1 (both need val_retrieval).
    best_metric: str = "val_loss"
    # A validation after epoch E (counted from 1) can take the best checkpoint only when
    # E > best_after_epoch (paper: 11 on BIOSCAN-5M, 24 on BIOSCAN-1M; docs/fidelity.md).
    best_after_epoch: int = 0
    # Which weights OUT/model holds at the end: best (the best checkpoint's, else the last
    # with a printed line) | last.
    final_model: Literal["best", "last"] = "best"
    # Also run the retrieval protocol on the val split at each validation (keys embedded
    # each time); its keys look like "image->dna/macro/species/top1/harmonic_mean".
    val_retrieval: bool = False
    # Intra-op threads of a CPU-only run; 0 = torch's default (one per core). 1 is fastest
    # on cores shared with other work, where OpenMP threads spin waiting for each other.
    cpu_threads: int = 0
    checkpoint_every_steps: int = 0  # 0 = at the end of every epoch only
    nan_policy: Literal["skip", "stop"] = "skip"  # skip (count) | stop (name the step and batch)
    collective_timeout_s: int = 1800
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class EvalConfig:
    split: EvalSplit = "test"
    modalities: list[str] = field(default_factory=lambda: ["image", "dna", "text"])
    ks: list[int] = field(default_factory=lambda: [1, 3, 5])
    batch_size: int = 256
    # auto: exact (flat) below 100 000 keys and on a GPU, ivfpq from 100 000 keys on the CPU
    # (clibd/index/faiss_index.py auto_kind; docs/scale.md, "Which kind"); the paper presets: flat.
    index: Literal["auto", "flat", "ivf", "ivfpq", "hnsw"] = "auto"
    precision: Precision = "auto"
    compile: bool = False  # torch.compile with frozen weights: ~15-30 s per tower, pays for large splits
    max_per_split: Optional[int] = None
    # Also score the fused image+DNA features as the published system does: their mean ("image_dna_mean")
    # and concatenation ("image_dna_concat") as queries and keys, and every key modality stacked ("all").
    fused_pairs: bool = False
    unlabelled: Unlabelled = "drop"


@dataclass
class QualityConfig:
    """Minimums a new specimen (and a reference barcode) must meet; docs/quality.md says why."""

    min_valid_nt: int = 200  # A/C/G/T count; BOLD's ID engine needs >= 100 bp overlap, BARCODE >= 500
    max_ambiguous: float = 0.05  # N + IUPAC codes over all bases, end padding of N excluded; BARCODE: 0.01
    min_object_contrast: float = 40.0  # grey levels the darkest object stands below the well; below = empty_well
    min_focus_ratio: float = 0.8  # object edge sharpness over the well highlights' (floor 10); below = blurry


@dataclass
class PretrainConfig(OptimConfig):
    """Masked-token pretraining of the DNA tower (``clibd pretrain-dna``), BarcodeBERT-style."""

    splits: list[str] = field(default_factory=lambda: ["pretrain", "other_heldout"])  # [] = every row
    epochs: int = 35
    batch_size: int = 128  # per process
    lr: float = 1e-4  # peak
    lr_reference_batch: int = 0  # no scaling with the global batch
    warmup_fraction: float = 0.1
    log_every_steps: int = 50
    # mlm: masked-token pretraining (BarcodeBERT) | kmer_spectral: fit the k-mer embedding table
    # in closed form, a truncated SVD of the barcodes' tf-idf weighted k-mer counts (no steps;
    # for model.dna.pooling=kmer_bag, docs/dna_recipe.md)
    objective: Literal["mlm", "kmer_spectral"] = "mlm"
    mask_ratio: float = 0.5  # of the maskable tokens (never UNK, padding or CLS)
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
        raise ConfigError(f"{source}: bad value for '{key}': {str(err.msg).splitlines()[0]}") from None


# A config file may start from others: ``extends: base.yaml`` or a list, paths relative to the
# file, merged in order before the file's own keys (configs/bioscan1m/paper.yaml is the 5M
# preset plus the 1M data block). What a run used is always written out whole (save_config).
EXTENDS = "extends"


def _read_yaml(path: Path) -> DictConfig:
    try:
        data = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: not a readable YAML config ({first})") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, found a list")
    return data


def config_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The files a config is built from, bases first, each with its own keys (``extends`` removed)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {seen[-1]})" if seen else ""))
    if path in seen:
        raise ConfigError(f"{seen[-1]}: '{EXTENDS}' loops back to {path}")
    data = _read_yaml(path)
    bases = data.pop(EXTENDS, None) or []
    chain: list[tuple[Path, DictConfig]] = []
    for base in [bases] if isinstance(bases, str) else list(bases):
        chain += config_chain(path.parent / str(base), (*seen, path))
    return chain + [(path, data)]


# A preset may ask for a value it cannot know (configs/bioscan5m/paper.yaml: the BarcodeBERT checkpoint):
# ``requires: {key: why}``. The key must then be set by the command line or a file extending the preset,
# else the error names the key, the file and why. (OmegaConf's ``???`` cannot do this: merging it over
# a default keeps the default.)
REQUIRES = "requires"
# Spellings of "no checkpoint" a command line may use for ``model.dna.pretrained``.
NO_CHECKPOINT = ("none", "null")
_UNSET = object()


def _sets(data: DictConfig, key: str) -> bool:
    return OmegaConf.select(data, key, default=_UNSET) is not _UNSET


def load_config(path: Optional[str | os.PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """Defaults <- YAML file (after the files it extends) <- ``key.sub=value`` overrides, checked
    against the schema."""
    cfg = OmegaConf.structured(Config)
    required: dict[str, tuple[Path, str]] = {}  # key -> (the file asking, why)
    for source, data in config_chain(Path(path)) if path is not None else []:
        required = {key: asked for key, asked in required.items() if not _sets(data, key)}
        required.update({str(key): (source, str(why)) for key, why in (data.pop(REQUIRES, None) or {}).items()})
        cfg = _merge(cfg, data, str(source))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
        given = OmegaConf.from_dotlist(list(overrides))
        required = {key: asked for key, asked in required.items() if not _sets(given, key)}
        cfg = _merge(cfg, given, "command line")
    for key, (source, why) in required.items():
        raise ConfigError(f"{source} requires {key}: {why}")
    OmegaConf.resolve(cfg)
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    dna = config.model.dna
    if isinstance(dna.pretrained, str) and dna.pretrained.lower() in NO_CHECKPOINT:
        dna.pretrained = None  # model.dna.pretrained=none: from scratch, said explicitly
    check_dna_tower(config.model)
    check_best_metric(config)
    check_counts(config)
    check_split(config.data)
    return config


# Counts that make no sense below a minimum, checked at load so that a typo ends in one line
# naming the key instead of an error deep in a loader or the loop.
MINIMUMS = {
    "train.batch_size": 1,
    "train.epochs": 1,
    "train.grad_accum": 1,
    "train.log_every_steps": 1,
    "train.eval_every_epochs": 1,
    "train.lr_reference_batch": 0,
    "train.cpu_threads": 0,
    "train.checkpoint_every_steps": 0,
    "train.collective_timeout_s": 1,
    "eval.batch_size": 1,
    "pretrain.batch_size": 1,
    "pretrain.epochs": 1,
    "pretrain.log_every_steps": 1,
    "data.num_workers": 0,
    "data.demo_specimens": 0,
    "model.embed_dim": 1,
    "model.image.image_size": 1,
    "model.dna.k": 1,
    "model.dna.max_nucleotides": 1,
    "quality.min_valid_nt": 0,
}


def check_counts(config: Config) -> None:
    """Every ``MINIMUMS`` key at least its minimum, and ``eval.ks`` positive, naming the key."""
    for key, least in MINIMUMS.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value < least:
            raise ConfigError(f"{key} must be at least {least}, got {value}")
    if any(k < 1 for k in config.eval.ks):
        raise ConfigError(f"eval.ks must all be at least 1, got {list(config.eval.ks)}")


def check_split(data: DataConfig) -> None:
    """``data.split`` is ``column``, ``auto`` or a split file that exists."""
    if data.split not in (SPLIT_COLUMN, SPLIT_AUTO) and not Path(data.split).is_file():
        raise ConfigError(
            f"data.split={data.split!r}: expected {SPLIT_COLUMN!r} (the table's split column), {SPLIT_AUTO!r} "
            "(split by the BIOSCAN-5M rules) or an existing split file (processid<TAB>split)"
        )


def check_dna_tower(model: ModelConfig) -> None:
    """Refuse DNA tower settings that cannot work together, naming both keys (the Literals check
    each key alone). Called at load and when a tower is built from a ModelConfig directly."""
    dna = model.dna
    if not dna.enabled:
        return
    if dna.pooling == "kmer_bag" and dna.head == "mlm_softmax":
        raise ConfigError(
            "model.dna.pooling=kmer_bag and model.dna.head=mlm_softmax do not go together: the bag is "
            "hidden-size vectors, the MLM softmax head ends in embed_dim probabilities; use head linear or identity"
        )
    if dna.kmer_pattern_weights and len(dna.kmer_pattern_weights) != max(len(dna.kmer_patterns), 1):
        raise ConfigError(
            f"model.dna.kmer_pattern_weights has {len(dna.kmer_pattern_weights)} weights for "
            f"{max(len(dna.kmer_patterns), 1)} model.dna.kmer_patterns: give one per pattern"
        )
    if dna.head == "identity" and dna.hidden_size != model.embed_dim:
        raise ConfigError(
            f"model.dna.head=identity makes the pooled output the embedding: model.dna.hidden_size "
            f"({dna.hidden_size}) must equal model.embed_dim ({model.embed_dim})"
        )


def retrieval_metric_names(cfg: Config) -> list[str]:
    """Every retrieval key validation can report: eval.modalities (enabled ones) as query and key,
    and with eval.fused_pairs the fused image+DNA kinds (clibd.eval.fused; a superset of its pairs)."""
    modalities = [m for m in cfg.eval.modalities if m in MODALITIES and getattr(cfg.model, m).enabled]
    queries = keys = modalities
    if cfg.eval.fused_pairs and {"image", "dna"} <= set(modalities):
        queries = modalities + ["image_dna_mean", "image_dna_concat"]
        keys = queries + ["all"]
    return [
        f"{query}->{key}/{avg}/{rank}/top{k}/{role}"
        for query in queries
        for key in keys
        for avg in RETRIEVAL_AVERAGES
        for rank in EVAL_RANKS
        for k in cfg.eval.ks
        for role in RETRIEVAL_ROLES
    ]


def check_best_metric(cfg: Config) -> None:
    """``train.best_metric`` must be a metric the configured validation will produce."""
    metric, tc = cfg.train.best_metric, cfg.train
    if metric == LOSS_METRIC:
        return
    retrieval = metric == MEAN_TOP1 or metric in retrieval_metric_names(cfg)
    if retrieval and not tc.val_retrieval:
        raise ConfigError(f"train.best_metric={metric!r} is a retrieval metric: it needs train.val_retrieval=true")
    if not retrieval:
        example = next(iter(retrieval_metric_names(cfg)), "image->dna/macro/species/top1/harmonic_mean")
        raise ConfigError(
            f"train.best_metric={metric!r} is not a metric validation produces: choose {LOSS_METRIC}, {MEAN_TOP1} "
            f"or a retrieval key <query>-><key>/<macro|micro>/<rank>/top<k>/<seen|unseen|harmonic_mean> over "
            f"eval.modalities {list(cfg.eval.modalities)} and eval.ks {list(cfg.eval.ks)}, e.g. {example!r} "
            "(retrieval metrics need train.val_retrieval=true)"
        )


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config (what the run actually used) next to its outputs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(to_yaml(cfg))


def config_from_dict(data: dict) -> Config:
    return OmegaConf.to_object(_merge(OmegaConf.structured(Config), data, "checkpoint config"))  # type: ignore[return-value]
