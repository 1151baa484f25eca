"""A tiny stand-in for the original CLIBD model (github.com/bioscan-ml/clibd, commit 7d73f80), written
from its module code so that its ``state_dict()`` has the original's exact key names and shapes and
its ``embed`` is the original's forward:

- bioscanclip/model/image_encoder.py: ``CLIBDImageEncoder`` (``base_image_encoder`` = timm ViT,
  ``blocks.N.attn.qkv`` wrapped by ``_LoRA_qkv_timm`` with ``qkv``, ``linear_a_q``, ``linear_b_q``,
  ``linear_a_v``, ``linear_b_v``; classifier reset to Linear(width, output_dim));
- bioscanclip/model/dna_encoder.py: ``CLIBDDNAEncoder`` (``base_dna_encoder`` = BertForMaskedLM,
  query/value optionally ``_LoRALayer`` with ``w``, ``w_a``, ``w_b``; ``cls.predictions.decoder``
  replaced by Linear(hidden, output_dim); forward ``logits.softmax(-1).mean(1)``, no attention mask);
- bioscanclip/model/language_encoder.py: ``CLIBDLanguageEncoder`` (``base_language_encoder`` =
  BertModel with pooler, ``proj`` = Linear(hidden, output_dim); forward
  ``proj(base(**x).last_hidden_state.mean(1))``);
- bioscanclip/model/simple_clip.py: ``SimpleCLIP`` (the three encoders + ``logit_scale``; each
  output L2-normalised).
LoRA B matrices are random here (the original zero-initialises them; trained ones are not zero), so
a conversion that dropped them would be caught.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel

R = 2  # LoRA rank (the original uses 4)


class LoRAQkv(nn.Module):  # _LoRA_qkv_timm
    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        self.qkv, self.dim = qkv, qkv.in_features
        self.linear_a_q, self.linear_b_q = nn.Linear(self.dim, R, bias=False), nn.Linear(R, self.dim, bias=False)
        self.linear_a_v, self.linear_b_v = nn.Linear(self.dim, R, bias=False), nn.Linear(R, self.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv[:, :, : self.dim] += self.linear_b_q(self.linear_a_q(x))
        qkv[:, :, -self.dim :] += self.linear_b_v(self.linear_a_v(x))
        return qkv


class LoRALayer(nn.Module):  # _LoRALayer
    def __init__(self, w: nn.Linear) -> None:
        super().__init__()
        self.w, self.w_a, self.w_b = w, nn.Linear(w.in_features, R, bias=False), nn.Linear(R, w.in_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(x) + self.w_b(self.w_a(x))


def _lora_bert(layers: nn.ModuleList) -> None:
    for layer in layers:
        layer.attention.self.query = LoRALayer(layer.attention.self.query)
        layer.attention.self.value = LoRALayer(layer.attention.self.value)


class ImageEncoder(nn.Module):
    def __init__(self, output_dim: int, image_size: int) -> None:
        super().__init__()
        vit = timm.create_model("test_vit", pretrained=False, img_size=image_size)
        for block in vit.blocks:
            block.attn.qkv = LoRAQkv(block.attn.qkv)
        vit.reset_classifier(num_classes=output_dim)
        self.base_image_encoder = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_image_encoder(x)


class DnaEncoder(nn.Module):
    def __init__(self, vocab_size: int, output_dim: int, lora: bool) -> None:
        super().__init__()
        mlm = BertForMaskedLM(
            BertConfig(
                vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
            )
        )
        if lora:
            _lora_bert(mlm.bert.encoder.layer)
        mlm.cls.predictions.decoder = nn.Linear(mlm.cls.predictions.decoder.in_features, output_dim)
        self.base_dna_encoder = mlm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.base_dna_encoder(ids).logits.softmax(dim=-1).mean(dim=1)


class LanguageEncoder(nn.Module):
    def __init__(self, vocab_size: int, output_dim: int, lora: bool) -> None:
        super().__init__()
        bert = BertModel(
            BertConfig(
                vocab_size=vocab_size, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48
            )
        )
        if lora:
            _lora_bert(bert.encoder.layer)
        self.base_language_encoder = bert
        self.proj = nn.Linear(bert.pooler.dense.out_features, output_dim)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.proj(self.base_language_encoder(**x).last_hidden_state.mean(dim=1))


class OriginalCLIBD(nn.Module):  # SimpleCLIP
    def __init__(
        self,
        dna_vocab: int,
        text_vocab: int,
        output_dim: int = 12,
        text: bool = True,
        lora: bool = False,
        image_size: int = 32,
    ):
        super().__init__()
        torch.manual_seed(0)
        self.image_encoder = ImageEncoder(output_dim, image_size)
        self.dna_encoder = DnaEncoder(dna_vocab, output_dim, lora)
        self.language_encoder = LanguageEncoder(text_vocab, output_dim, lora) if text else None
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.5)
        for module in self.modules():  # trained-looking adapters: B != 0
            if isinstance(module, (LoRAQkv, LoRALayer)):
                for linear in module.children():
                    if linear.weight.shape[1] == R:
                        nn.init.normal_(linear.weight, std=0.2)
        self.eval()

    @torch.no_grad()
    def embed(self, image: torch.Tensor, dna_ids: torch.Tensor, text: dict | None) -> dict[str, torch.Tensor]:
        out = {"image": self.image_encoder(image), "dna": self.dna_encoder(dna_ids)}
        if self.language_encoder is not None and text is not None:
            out["text"] = self.language_encoder(text)
        return {name: F.normalize(value, p=2, dim=-1) for name, value in out.items()}
