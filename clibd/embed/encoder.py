"""Fast embedding for inference: bf16 weights and ``torch.compile``.

``InferenceEncoder(model, device, precision, compile, batch_size)(batch, modality)`` returns
float32 ``[B, D]`` embeddings. It is what evaluation, ``clibd index build``, ``clibd embed``
and ``clibd classify`` call for every batch.

- ``precision``: ``fp32``; ``bf16`` (the weights cast once to bf16); ``auto`` = bf16 on a
  CUDA GPU that supports it, fp32 on a CPU (:func:`cpu_computes_bf16` says whether bf16 pays).
- ``compile``: ``torch.compile`` once per tower, the batch padded to ``batch_size`` so a short
  last batch does not compile again; ``freeze`` folds the weights in as constants (they
  must then not change: the evaluator reused across validations builds its encoder unfrozen
  and gives it the new weights with :meth:`InferenceEncoder.refresh`).
- Nothing is copied, cast or compiled until the first batch: an evaluation whose embeddings
  all come from the cache pays for none of it.

Why these choices, and what they were measured to gain: docs/evaluation.md, "Embedding speed".
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from typing import Any, Callable, ContextManager, get_args

import torch

from clibd.config import MODALITIES, Precision
from clibd.models.clibd_model import BATCH_KEYS

PRECISIONS = get_args(Precision)


@functools.cache
def _private_torch() -> tuple[bool, Callable[[bool], ContextManager]]:
    """The private torch APIs this module uses, looked up in this one guarded place: whether
    oneDNN computes bf16 natively, and inductor's config patch for weight freezing. A torch
    release that moves them degrades to the safe side (bf16 deemed emulated, no freezing)."""
    try:
        from torch._inductor import config as inductor_config

        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return native_bf16, lambda enabled: inductor_config.patch(freezing=enabled)
    except (AttributeError, ImportError, RuntimeError) as err:
        warnings.warn(f"private torch API unavailable ({err}): no bf16 detection, no weight freezing", stacklevel=2)
        return False, lambda enabled: contextlib.nullcontext()


def cpu_computes_bf16() -> bool:
    """Whether oneDNN has native bf16 on this CPU (AVX512-BF16 or AMX); without it bf16 is emulated,
    slower than fp32."""
    return _private_torch()[0]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    if precision == "bf16" and device.type == "cpu" and not cpu_computes_bf16():
        warnings.warn(
            "precision bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated and slower than fp32", stacklevel=3
        )
    return torch.bfloat16 if precision == "bf16" else torch.float32


def batch_inputs(batch: dict[str, torch.Tensor], modality: str) -> tuple[torch.Tensor, ...]:
    """The tensors ``encode_<modality>`` takes, from a collated batch (architecture.md batch keys)."""
    if modality not in BATCH_KEYS:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    return tuple(batch[key] for key in BATCH_KEYS[modality])


def _compilable_attention(model: torch.nn.Module) -> None:
    """Plain matmul + softmax attention in timm blocks and HF transformers, for inductor to fuse."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if hasattr(module, "fused_attn"):  # timm Attention
            module.fused_attn = False
        elif isinstance(module, PreTrainedModel):
            module.set_attn_implementation("eager")


class InferenceEncoder:
    """Batches of one model's inputs -> float32 embeddings, in inference mode.

    With fp32 and no compile it calls the model as it is (any object with ``encode_<modality>``).
    Otherwise it works on a copy (the caller's model, e.g. the one being trained, is left
    untouched) unless ``in_place``, made at the first batch. ``freeze`` (default: ``compile``)
    compiles with the weights as constants.
    """

    def __init__(
        self,
        model: Any,
        device: torch.device,
        precision: str = "auto",
        compile: bool = False,
        batch_size: int = 0,
        in_place: bool = False,
        freeze: bool | None = None,
    ) -> None:
        self.dtype = resolve_dtype(precision, device)
        self.device = device
        self.batch_size = batch_size if compile else 0
        self.compile = compile
        self.freeze = compile if freeze is None else freeze and compile
        self._source = model  # the caller's model until the first batch prepares the encoder's own
        self._copy = not in_place and (self.dtype != torch.float32 or compile)
        self._model: Any = None
        self._compiled: dict[str, Callable[..., torch.Tensor]] = {}

    @property
    def model(self) -> Any:
        """The model the batches run through: the caller's, or the encoder's cast / compilable copy."""
        if self._model is None:
            # Made at the first batch, often inside an inference-mode embedding loop: the copy's
            # weights must stay normal tensors, or ``refresh`` could not load new ones into them.
            with torch.inference_mode(False):
                model = copy.deepcopy(self._source) if self._copy else self._source
                if self.dtype != torch.float32 or self.compile:
                    model.to(device=self.device, dtype=self.dtype).eval()
            if self.compile:
                _compilable_attention(model)
            self._model = model
        return self._model

    @property
    def prepared(self) -> bool:
        """Whether a batch went through, i.e. the model was copied / cast / compiled if it needed to be."""
        return self._model is not None

    def refresh(self, model: torch.nn.Module) -> None:
        """Take ``model``'s current weights into the encoder's copy (cast to its dtype), keeping
        the compiled towers. Not for a frozen encoder, whose compiled code holds the old weights."""
        if self.freeze:
            raise RuntimeError("a frozen compiled encoder cannot take new weights; build it with freeze=False")
        if self._copy and self._model is not None:
            self._model.load_state_dict(model.state_dict())
        else:
            self._source, self._model = model, None

    def _function(self, modality: str) -> Callable[..., torch.Tensor]:
        encode = getattr(self.model, f"encode_{modality}")
        if not self.compile:
            return encode
        if modality not in self._compiled:
            self._compiled[modality] = torch.compile(encode)
        return self._compiled[modality]

    def __call__(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        encode = self._function(
            modality
        )  # the copy is made here, outside inference mode: its weights stay normal tensors
        inputs = [x.to(self.dtype) if x.is_floating_point() else x for x in batch_inputs(batch, modality)]
        rows = len(inputs[0])
        if rows < self.batch_size:  # repeat the last row: same shapes, no recompile
            inputs = [torch.cat([x, x[-1:].expand(self.batch_size - rows, *x.shape[1:])]) for x in inputs]
        # Freezing is read when the first call compiles; torch.compile(options={"freezing": True})
        # was measured not to apply it (aten::addmm, not the pre-packed oneDNN linear, in the profile).
        # Without compile, inductor's config is not touched: importing it loads torch._dynamo (~1 s).
        freezing = _private_torch()[1](self.freeze) if self.compile else contextlib.nullcontext()
        with torch.inference_mode(), freezing:
            return encode(*inputs)[:rows].float()


def encode_batch(model: torch.nn.Module, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
    """The ``modality`` embedding of a collated batch, as the model computes it (no cast, no compile)."""
    return getattr(model, f"encode_{modality}")(*batch_inputs(batch, modality))
