"""InferenceEncoder: precision, compile, and that it never changes the caller's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clibd.embed.encoder import InferenceEncoder, encode_batch, resolve_dtype
from tests.helpers.tiny_checkpoint import tiny_model

CPU = torch.device("cpu")


def _batch(model, n: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    barcodes = ["".join(rng.choice(list("ACGT"), 600)) for _ in range(n)]
    dna = model.dna_tokenizer(barcodes)
    text = model.text_tokenizer(
        ["Diptera Sciaridae Bradysia Bradysia_impatiens"] * n, padding=True, return_tensors="pt"
    )
    return {
        "image": torch.randn(n, 3, 32, 32, generator=generator),
        "dna_ids": torch.from_numpy(dna.ids).long(),
        "dna_mask": torch.from_numpy(dna.attention_mask).long(),
        "text_ids": text["input_ids"],
        "text_mask": text["attention_mask"],
    }


def _eager(model, batch: dict, modality: str) -> torch.Tensor:
    with torch.no_grad():
        return encode_batch(model, batch, modality)


def test_precision_names() -> None:
    assert resolve_dtype("auto", CPU) == torch.float32  # CPU results never depend on the CPU's instructions
    assert resolve_dtype("fp32", CPU) == torch.float32
    with pytest.raises(ValueError, match="precision 'fp16': choose one of auto, fp32, bf16"):
        resolve_dtype("fp16", CPU)


def test_fp32_calls_the_model_as_it_is() -> None:
    model = tiny_model()
    batch = _batch(model, 3)
    encoder = InferenceEncoder(model, CPU, "fp32")
    assert encoder.model is model
    for modality in ("image", "dna", "text"):
        torch.testing.assert_close(encoder(batch, modality), _eager(model, batch, modality), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:precision bf16 on a CPU without")
def test_bf16_works_on_a_copy_and_stays_close_to_fp32() -> None:
    model = tiny_model()
    batch = _batch(model, 4)
    encoder = InferenceEncoder(model, CPU, "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model untouched
    assert all(p.dtype == torch.bfloat16 for p in encoder.model.parameters())
    for modality in ("image", "dna", "text"):
        out = encoder(batch, modality)
        assert out.dtype == torch.float32
        cosine = (out * _eager(model, batch, modality)).sum(-1)
        assert cosine.min() > 0.99, (modality, cosine)


@pytest.mark.slow
def test_compiled_matches_eager_and_pads_a_short_batch_instead_of_recompiling() -> None:
    from torch._dynamo.utils import counters

    model = tiny_model()
    batch = _batch(model, 4)
    encoder = InferenceEncoder(model, CPU, "fp32", compile=True, batch_size=4)
    assert any(hasattr(m, "fused_attn") for m in model.modules())
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))  # only the copy changed
    torch._dynamo.reset()
    counters.clear()
    for modality in ("image", "dna"):
        full = encoder(batch, modality)
        torch.testing.assert_close(full, _eager(model, batch, modality), rtol=1e-4, atol=1e-5)
        short = encoder({k: v[:3] for k, v in batch.items()}, modality)
        assert short.shape == (3, full.shape[1])
        torch.testing.assert_close(short, full[:3], rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 2  # one per tower: the 3-row batch reused it


@pytest.mark.slow
def test_compiled_encoder_runs_pre_packed_linears() -> None:
    """Weight freezing applied: every Linear runs as a pre-packed MKL / oneDNN op, no aten::addmm
    (torch.compile's options={"freezing": True} silently did not apply it)."""
    from torch.profiler import ProfilerActivity, profile

    model = tiny_model()
    batch = _batch(model, 4)
    encoder = InferenceEncoder(model, CPU, "fp32", compile=True, batch_size=4)
    encoder(batch, "dna")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encoder(batch, "dna")
    ops = {event.key for event in prof.key_averages()}
    assert "aten::addmm" not in ops and ops & {"mkl::_mkl_linear", "mkldnn::_linear_pointwise"}, sorted(ops)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_warns_only_where_bf16_is_emulated(monkeypatch, native: bool) -> None:
    import warnings

    import clibd.embed.encoder

    monkeypatch.setattr(clibd.embed.encoder, "cpu_computes_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_dtype("bf16", CPU) == torch.bfloat16
    assert [str(w.message) for w in caught] == (
        [] if native else ["precision bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated and slower than fp32"]
    )


@pytest.mark.filterwarnings("ignore:precision bf16 on a CPU without")
def test_refresh_takes_new_weights_into_the_copy_and_keeps_the_compiled_towers(monkeypatch) -> None:
    """What validation during training relies on: one encoder per run, the weights renewed each time."""
    compiled: list[str] = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn.__name__) or fn)  # count, do not compile
    model = tiny_model()
    batch = _batch(model, 2)
    encoder = InferenceEncoder(model, CPU, "bf16", compile=True, batch_size=2, freeze=False)
    before = encoder(batch, "dna")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    torch.testing.assert_close(encoder(batch, "dna"), before, rtol=0, atol=0)  # a copy: not yet renewed
    encoder.refresh(model)
    refreshed = encoder(batch, "dna")
    assert compiled == ["encode_dna"]  # once, for both calls
    fresh = InferenceEncoder(model, CPU, "bf16", compile=True, batch_size=2, freeze=False)  # same attention code
    torch.testing.assert_close(refreshed, fresh(batch, "dna"), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="frozen compiled encoder cannot take new weights"):
        InferenceEncoder(model, CPU, "fp32", compile=True).refresh(model)
