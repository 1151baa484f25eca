"""``clibd convert-clibd CKPT.pth --config THEIR.yaml --out DIR [--text-tokenizer DIR]``.

Turns a ``best.pth`` released with the original CLIBD (bioscan-ml/clibd: image+DNA or
image+DNA+text, BIOSCAN-1M or -5M, full fine-tuning or LoRA) into a CLIBDModel folder, given the
model yaml it was trained with (``bioscanclip/config/model_config/.../*.yaml``). The folder carries
the original's input pipeline and a ``config.yaml`` with its evaluation protocol (docs/published.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the original's best.pth (a state dict of its SimpleCLIP)")
    parser.add_argument("--config", required=True, help="the original's model yaml for that checkpoint")
    parser.add_argument("--out", required=True, help="output folder (CLIBDModel.save_pretrained)")
    parser.add_argument(
        "--text-tokenizer",
        help="local copy of the text tokenizer (default: the yaml's "
        "language.pre_train_model, prajjwal1/bert-small, from the Hugging Face cache)",
    )
    parser.add_argument("--dna-heads", type=int, help="attention heads of the DNA BERT (default: hidden / 64)")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text BERT (default: hidden / 64)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from clibd.models.convert_clibd import convert_original, read_original_config, save_converted

    setup = read_original_config(args.config)
    tokenizer = None
    if args.text_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.text_tokenizer, local_files_only=True)
    model = convert_original(
        args.checkpoint, setup, text_tokenizer=tokenizer, dna_heads=args.dna_heads, text_heads=args.text_heads
    )
    out = save_converted(model, args.out)
    print(f"converted {args.checkpoint} ({', '.join(model.modalities)}) -> {out}")
    print(
        "it embeds new specimens through the original's input pipeline (clibd embed / classify / index); "
        f"evaluate it as the original did with: python eval.py --checkpoint {out} data.root=... (docs/published.md)"
    )
    return 0
