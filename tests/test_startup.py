"""Start-up (issue 26): a command imports only what its inputs need (``clibd.models.registry``).

``clibd classify`` (and ``clibd embed``) runs in a fresh interpreter on a saved model with all
three towers (a timm ViT, the k-mer-bag DNA tower of docs/dna_recipe.md, a BERT text tower); at
exit the process lists the watched libraries in ``sys.modules``. Barcodes alone must load none of
the image tower's libraries (timm, open_clip, torchvision), no compiler (torch._dynamo, which
torchvision and transformers import) and no transformers or peft (a bag-only DNA tower needs torch
alone). Photos load the timm tower's libraries, and still none of the text tower's or open_clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clibd.embed.embedder import Embedder
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.faiss_index import ReferenceIndex
from clibd.taxonomy import ALL_RANKS
from tests.helpers.tiny_checkpoint import bag_only_model_cfg, save_run, tiny_model

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("torch", "faiss", "torchvision", "timm", "open_clip", "torch._dynamo", "transformers", "peft")
# Runs `clibd ARGS...`; at exit writes the watched modules that were imported to $CLIBD_MODULES_OUT.
PROBE = f"""
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["CLIBD_MODULES_OUT"], "w").write(
    json.dumps([m for m in {WATCHED!r} if m in sys.modules])))
from clibd.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A saved run of the bag-only model, a DNA library of 6 keys, one barcode and one photo."""
    folder = tmp_path_factory.mktemp("startup")
    checkpoint = save_run(folder / "run", tiny_model(cfg=bag_only_model_cfg()))
    rng = np.random.default_rng(0)
    barcodes = ["".join(rng.choice(list("ACGT"), 600)) for _ in range(7)]
    emb, ids = Embedder(checkpoint, device="cpu").embed_dna(barcodes[:6], [f"key{i}" for i in range(6)])
    taxonomy = pd.DataFrame({rank: [f"{rank}{i % 2}" for i in range(6)] for rank in ALL_RANKS}, dtype="string")
    metadata = {"modality": "dna", "thresholds": {m: {"threshold": 0.5} for m in ("image", "dna")}}
    index = ReferenceIndex(emb.shape[1], checkpoint_hash=checkpoint_hash(checkpoint), metadata=metadata)
    index.add(emb, ids, taxonomy)
    index.save(folder / "index")
    (folder / "new.fasta").write_text(f">new\n{barcodes[6]}\n")
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / "new.jpg")
    inputs = {"dna": folder / "new.fasta", "images": folder / "new.jpg"}
    return {"checkpoint": checkpoint, "index": folder / "index", **inputs}


def imported(args: list[str], tmp_path: Path) -> set[str]:
    """The watched modules ``clibd ARGS`` imported (it must succeed)."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLIBD_MODULES_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def classify_modules(saved: dict[str, Path], inputs: str, tmp_path: Path) -> tuple[pd.DataFrame, set[str]]:
    """(the classify table, the watched modules the process imported) for ``--<inputs>``."""
    args = ["classify", "--checkpoint", str(saved["checkpoint"]), "--index", str(saved["index"])]
    loaded = imported([*args, f"--{inputs}", str(saved[inputs]), "--out", str(tmp_path / "table.csv")], tmp_path)
    return pd.read_csv(tmp_path / "table.csv"), loaded


BARCODE_ONLY_NEVER = {"torchvision", "timm", "open_clip", "torch._dynamo", "transformers", "peft"}


def test_barcode_only_classify_imports_no_image_library_no_compiler_no_transformers(saved, tmp_path) -> None:
    table, loaded = classify_modules(saved, "dna", tmp_path)
    assert table["id"].tolist() == ["new"] and table["evidence"].tolist() == ["dna"]
    assert {"torch", "faiss"} <= loaded  # the probe sees what the command imported
    assert not loaded & BARCODE_ONLY_NEVER, loaded


def test_barcode_only_embed_imports_no_image_library_no_compiler_no_transformers(saved, tmp_path) -> None:
    out = tmp_path / "new.parquet"
    loaded = imported(
        ["embed", "--checkpoint", str(saved["checkpoint"]), "--dna", str(saved["dna"]), "--out", str(out)], tmp_path
    )
    assert pd.read_parquet(out)["id"].tolist() == ["new"]
    assert "torch" in loaded and not loaded & BARCODE_ONLY_NEVER, loaded


@pytest.mark.slow
def test_photo_classify_imports_the_timm_towers_libraries_only(saved, tmp_path) -> None:
    table, loaded = classify_modules(saved, "images", tmp_path)
    assert table["id"].tolist() == ["new"]
    assert {"torch", "faiss", "timm", "torchvision"} <= loaded
    assert not loaded & {"open_clip", "transformers", "peft"}, loaded
