"""Turn a released ``best.pth`` of the original CLIBD (github.com/bioscan-ml/clibd) into a CLIBDModel.

The original's model (``bioscanclip/model/simple_clip.py``, ``SimpleCLIP``) saves, from
``scripts/train_cl.py`` (``torch.save(model.state_dict())``), these tensors:

- ``image_encoder.base_image_encoder.*``: a timm ViT (``bioscanclip/model/image_encoder.py``,
  ``CLIBDImageEncoder``), its classifier reset to ``head`` = Linear(width, output_dim). LoRA is
  always injected there (``lora_layer=[]`` is falsy): ``blocks.N.attn.qkv`` becomes
  ``_LoRA_qkv_timm`` with ``qkv`` (the original Linear), ``linear_a_q``/``linear_b_q``,
  ``linear_a_v``/``linear_b_v``; its output is ``qkv(x)`` plus ``B_q A_q x`` on the q third and
  ``B_v A_v x`` on the v third.
- ``dna_encoder.base_dna_encoder.*``: a ``BertForMaskedLM`` (``bioscanclip/model/dna_encoder.py``,
  ``CLIBDDNAEncoder``) whose ``cls.predictions.decoder`` is Linear(hidden, output_dim); its
  embedding is ``logits.softmax(-1).mean(1)`` over all positions, without an attention mask.
  In LoRA runs ``attention.self.query``/``value`` are ``_LoRALayer``: ``w`` + ``w_b(w_a(x))``.
- ``language_encoder.base_language_encoder.*`` (a ``BertModel``, ``CLIBDLanguageEncoder`` in
  ``bioscanclip/model/language_encoder.py``, LoRA as for DNA) and ``language_encoder.proj``
  (Linear(hidden, output_dim)); its embedding is ``proj(last_hidden_state.mean(1))``.
- ``logit_scale`` (a log, as ours).

Older files use the names that ``bioscanclip/util/util.py:update_checkpoint_param_names`` renames
(``lora_vit`` -> ``base_image_encoder`` ...); DDP files carry ``module.``. LoRA adapters are merged
into the weights they adapt (exact up to float rounding), so the converted model is plain.
The DNA tower is converted with the original's embedding switches (``dna.head: mlm_softmax``,
``dna.pooling: mean_all``, ``dna.attention_mask: false``, ``dna.prefix_token_id: 0``) and the
text tower with ``text.pooling: mean_all``, ``text.max_length: 20``. The folder also carries the
original's inference inputs (:func:`record_original_inputs`; docs/published.md), so the Embedder,
``clibd embed`` / ``classify`` / ``index`` and ``python eval.py`` feed it what the original fed it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, BertConfig, PreTrainedTokenizerBase

from clibd.atomic import atomic_directory
from clibd.config import Config, DnaTowerConfig, ImageTowerConfig, ModelConfig, TextTowerConfig, save_config
from clibd.models.clibd_model import CLIBDModel
from clibd.models.weights import CheckpointMismatchError, load_state_dict

IMAGE, DNA, TEXT = "image_encoder.base_image_encoder.", "dna_encoder.base_dna_encoder.", "language_encoder."
# bioscanclip/util/util.py:update_checkpoint_param_names, applied the same way (substring replace).
_OLD_NAMES = {
    "LoRA_barcode_bert": "CLIBDDNAEncoder",
    "lora_barcode_bert": "base_dna_encoder",
    "LoRA_ViT_timm": "CLIBDImageEncoder",
    "lora_vit": "base_image_encoder",
    "LoRA_bert": "CLIBDLanguageEncoder",
    "lora_bert": "base_language_encoder",
}
# Tensors of the original that compute nothing in its embeddings.
_UNUSED = (
    DNA + "cls.predictions.bias",  # the vocabulary bias; the replaced decoder has its own
    DNA + "bert.embeddings.position_ids",
    TEXT + "base_language_encoder.embeddings.position_ids",
    TEXT + "base_language_encoder.pooler.",  # mean pooling never reads the pooler
)


# The original's evaluation view (bioscanclip/util/dataset.py, lines 217-222): ToTensor, Resize(256),
# CenterCrop(224), no Normalize; its ViT-B/16 takes 224 px. A checkpoint of another input size (the tests'
# tiny ViTs) gets the same 256/224 ratio.
ORIGINAL_RESIZE, ORIGINAL_CROP = 256, 224


@dataclass
class OriginalSetup:
    """What the original's model yaml (``bioscanclip/config/model_config/...``) says about the model."""

    modalities: list[str]
    output_dim: int = 768
    image_model: str = "vit_base_patch16_224"
    text_model: str = "prajjwal1/bert-small"


def read_original_config(path: str | os.PathLike) -> OriginalSetup:
    """The model yaml of the original: sections ``image`` / ``dna`` / ``language`` say which towers exist."""
    raw = OmegaConf.load(path)
    modalities = [ours for theirs, ours in (("image", "image"), ("dna", "dna"), ("language", "text")) if theirs in raw]
    if not modalities:
        raise ValueError(f"{path}: no image, dna or language section; is this a model_config yaml of bioscan-ml/clibd?")
    setup = OriginalSetup(modalities=modalities, output_dim=int(raw.get("output_dim", 768)))
    image, dna, text = raw.get("image", {}), raw.get("dna", {}), raw.get("language", {})
    if "image" in raw and image.get("input_type", "image") != "image":
        raise ValueError(f"{path}: image.input_type={image.get('input_type')!r}: only image inputs convert")
    if "dna" in raw and dna.get("input_type", "sequence") != "sequence":
        raise ValueError(f"{path}: dna.input_type={dna.get('input_type')!r}: only sequence inputs convert")
    if image.get("model") == "lora_clip_image" or raw.get("using_open_clip") or raw.get("for_bio_clip"):
        raise ValueError(f"{path}: the open_clip / BioCLIP variants of the original do not convert")
    setup.image_model = str(image.get("pre_train_model", setup.image_model))
    setup.text_model = str(text.get("pre_train_model", setup.text_model))
    return setup


def original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The released file's tensors under today's names: ``module.`` dropped, old names renamed."""
    state = {}
    for key, value in load_state_dict(path).items():
        key = key.removeprefix("module.")
        for old, new in _OLD_NAMES.items():
            key = key.replace(old, new)
        state[key] = value
    return state


def merge_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold the original's LoRA adapters into the weights they adapt (their scale is 1: no alpha / r)."""
    merged = dict(state)
    for key in [k for k in state if k.endswith(".attn.qkv.qkv.weight")]:  # image: _LoRA_qkv_timm
        base = key.removesuffix(".qkv.weight")
        weight = merged.pop(key).clone()
        dim = weight.shape[1]
        weight[:dim] += merged.pop(f"{base}.linear_b_q.weight") @ merged.pop(f"{base}.linear_a_q.weight")
        weight[-dim:] += merged.pop(f"{base}.linear_b_v.weight") @ merged.pop(f"{base}.linear_a_v.weight")
        merged[f"{base}.weight"] = weight
        if f"{base}.qkv.bias" in merged:
            merged[f"{base}.bias"] = merged.pop(f"{base}.qkv.bias")
    for key in [k for k in state if k.endswith((".query.w.weight", ".value.w.weight"))]:  # BERT: _LoRALayer
        base = key.removesuffix(".w.weight")
        merged[f"{base}.weight"] = merged.pop(key) + merged.pop(f"{base}.w_b.weight") @ merged.pop(f"{base}.w_a.weight")
        if f"{base}.w.bias" in merged:
            merged[f"{base}.bias"] = merged.pop(f"{base}.w.bias")
    return merged


def _bert_config(state: dict[str, torch.Tensor], prefix: str, heads: Optional[int]) -> BertConfig:
    vocab, hidden = state[f"{prefix}embeddings.word_embeddings.weight"].shape
    layer_keys = [k.removeprefix(f"{prefix}encoder.layer.") for k in state if k.startswith(f"{prefix}encoder.layer.")]
    layers = len({k.split(".")[0] for k in layer_keys})
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads or max(1, hidden // 64),  # BERT's 64-wide heads unless told
        intermediate_size=state[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[f"{prefix}embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0],
    )


def _image_size(state: dict[str, torch.Tensor]) -> int:
    patch = state[IMAGE + "patch_embed.proj.weight"].shape[-1]
    tokens = state[IMAGE + "pos_embed"].shape[1] - 1  # one class token
    return int(math.isqrt(tokens)) * patch


def _dna_tower_config(bert: BertConfig) -> DnaTowerConfig:
    vocab = bert.vocab_size
    k = next((k for k in range(1, 13) if 4**k + 3 == vocab), None)
    if k is None:
        raise CheckpointMismatchError(f"DNA vocabulary of {vocab} tokens is not <MASK>,<CLS>,<UNK> + 4^k k-mers")
    return DnaTowerConfig(
        k=k,
        vocab="barcodebert_v1",
        max_nucleotides=660,
        hidden_size=bert.hidden_size,
        num_layers=bert.num_hidden_layers,
        num_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size,
        head="mlm_softmax",
        pooling="mean_all",
        attention_mask=False,
        prefix_token_id=0,
    )


def _ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the (LoRA-merged) original tensors to CLIBDModel's."""
    renames = [
        (IMAGE + "head.", "heads.image."),
        (IMAGE, "towers.image.backbone."),
        (DNA + "bert.", "towers.dna.backbone."),
        (DNA + "cls.predictions.transform.", "towers.dna.transform."),
        (DNA + "cls.predictions.decoder.", "towers.dna.decoder."),
        (TEXT + "proj.", "heads.text."),
        (TEXT + "base_language_encoder.", "towers.text.backbone."),
        ("logit_scale", "logit_scale"),
    ]
    ours, unknown = {}, []
    for key, value in state.items():
        if key.startswith(_UNUSED):
            continue
        new = next((to + key.removeprefix(src) for src, to in renames if key.startswith(src)), None)
        if new is None:
            unknown.append(key)
        else:
            ours[new] = value
    if unknown:
        raise CheckpointMismatchError(f"tensors the conversion does not know: {sorted(unknown)[:5]}")
    return ours


def convert_original(
    checkpoint: str | os.PathLike,
    setup: OriginalSetup,
    text_tokenizer: Optional[PreTrainedTokenizerBase] = None,
    dna_heads: Optional[int] = None,
    text_heads: Optional[int] = None,
) -> CLIBDModel:
    """A CLIBDModel computing the same embeddings as the original's ``SimpleCLIP`` with these weights."""
    state = merge_lora(original_state_dict(checkpoint))
    prefixes = {"image": IMAGE, "dna": DNA, "text": TEXT}
    present = {m for m, prefix in prefixes.items() if any(k.startswith(prefix) for k in state)}
    if present != set(setup.modalities):
        raise CheckpointMismatchError(
            f"{checkpoint}: holds towers {sorted(present)}, the yaml describes {sorted(setup.modalities)}"
        )
    # The original's logit scale is never clamped (bioscanclip/model/simple_clip.py: a bare nn.Parameter).
    cfg = ModelConfig(embed_dim=setup.output_dim, logit_scale_max=None)
    arch: dict[str, Any] = {}
    cfg.image = ImageTowerConfig(enabled="image" in present, name=setup.image_model)
    if "image" in present:
        cfg.image.image_size = _image_size(state)
        arch["image"] = {"backbone": "timm"}
    cfg.dna.enabled = "dna" in present
    if "dna" in present:
        bert = _bert_config(state, DNA + "bert.", dna_heads)
        cfg.dna = _dna_tower_config(bert)
        arch["dna"] = {"bert": bert.to_dict()}
    cfg.text = TextTowerConfig(enabled="text" in present, name=setup.text_model, pooling="mean_all", max_length=20)
    if "text" in present:
        bert = _bert_config(state, TEXT + "base_language_encoder.", text_heads)
        cfg.text.hidden_size, cfg.text.num_layers = bert.hidden_size, bert.num_hidden_layers
        cfg.text.num_heads, cfg.text.intermediate_size = bert.num_attention_heads, bert.intermediate_size
        arch["text"] = {"config": bert.to_dict()}
        text_tokenizer = text_tokenizer or _local_tokenizer(setup.text_model)
    model = CLIBDModel(cfg, text_tokenizer=text_tokenizer, architectures=arch)
    missing, unexpected = model.load_state_dict(_ours(state), strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{checkpoint}: does not fit the converted model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    record_original_inputs(model)
    return model.eval()


def record_original_inputs(model: CLIBDModel) -> None:
    """Keep the original's input pipeline in the model (saved in config.json): images Resize 256 +
    CenterCrop 224 of the float tensor of the whole decoded image, not normalised; barcodes not cleaned
    beyond N-padding to 660 (``data.dna_cleaning: original``)."""
    if "image" in model.modalities:
        size = model.cfg.image.image_size
        model.image_normalization = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        model.image_view = {"eval_resize": round(size * ORIGINAL_RESIZE / ORIGINAL_CROP), "pipeline": "original"}
    if model.dna_tokenizer is not None:
        model.dna_tokenizer.cleaning = "original"


def original_run_config(model: CLIBDModel) -> Config:
    """A run config for a converted model: the original's data pipeline and evaluation protocol
    (``configs/bioscan5m/paper.yaml``'s data and eval values), so ``python eval.py --checkpoint DIR
    data.root=...`` evaluates it as the original did."""
    cfg = Config(name="clibd_converted", model=model.cfg)
    if model.image_normalization is not None and model.image_view is not None:
        cfg.data.mean, cfg.data.std = model.image_normalization["mean"], model.image_normalization["std"]
        cfg.data.eval_resize, cfg.data.image_pipeline = model.image_view["eval_resize"], model.image_view["pipeline"]
    cfg.data.dna_cleaning = "original"
    cfg.train.seed = 42  # bioscanclip/config/global_config.yaml: default_seed (eval.max_per_split samples with it)
    cfg.eval.modalities = list(model.modalities)
    cfg.eval.precision = "fp32"
    cfg.eval.fused_pairs = {"image", "dna"} <= set(model.modalities)
    cfg.eval.unlabelled = "class"
    return cfg


def _local_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The text tokenizer from a local directory or the Hugging Face cache: never downloaded here."""
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        raise FileNotFoundError(
            f"text tokenizer {name!r} is neither a local directory nor in the Hugging Face cache; "
            "pass --text-tokenizer DIR (a saved copy of it)"
        ) from None


def save_converted(model: CLIBDModel, out: str | os.PathLike) -> Path:
    """``save_pretrained`` plus the run config (:func:`original_run_config`) as ``config.yaml``, one atomic write."""
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        save_config(original_run_config(model), tmp / "config.yaml")
    return Path(out)
