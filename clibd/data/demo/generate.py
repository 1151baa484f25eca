"""Write the synthetic demo dataset in the exact BIOSCAN-5M layout.

``generate_demo(out, n, seed)`` writes ``out/bioscan5m/metadata/csv/...csv`` and the
``images/cropped_256/<split>/<chunk>/<processid>.jpg`` tree of ``simulate_demo(n, seed)``, so the demo goes through
the same reader as the real dataset. Everything is written to a hidden sibling folder
that is renamed into place at the end, so ``out/bioscan5m`` is either complete or absent.

``photos=False`` simulates and writes the metadata alone (no images folder), for a table of
BIOSCAN-5M's size (``bench/scale_5m.py``): specimens are read and their photos planned in
blocks of ``BLOCK``, so memory holds the table and one block's temporaries (the planned
drawings alone are kilobytes per specimen). Up to ``BLOCK`` specimens, the table is the one
``photos=True`` makes with the same seed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from clibd.config import DataConfig
from clibd.data.sources.bioscan5m import FOLDER, METADATA_FILE
from clibd.data.demo.barcodes import BLOCK, evolve, read_barcodes
from clibd.data.demo.images import Drawing, body_traits, plan_drawings, write_images
from clibd.data.demo.metadata import build_metadata
from clibd.data.demo.names import ORDERS
from clibd.data.demo.specimens import assign_splits, barcode_groups, haplotypes, specimen_counts
from clibd.data.demo.tree import build_tree

DEFAULT_SPECIMENS = 4000
SPECIMENS_PER_SPECIES = 9  # on average, before the log-normal imbalance


@dataclass(frozen=True)
class Simulation:
    table: pd.DataFrame  # the metadata, one row per specimen
    drawing: Optional[Drawing]  # what each image shows (None: simulated without photos)
    image_rng: np.random.Generator  # the image stream, where drawing the pixels continues


def _blocks(n: int) -> list[slice]:
    return [slice(start, start + BLOCK) for start in range(0, n, BLOCK)]


def _photo_columns(drawing: Drawing) -> dict[str, np.ndarray]:
    """The metadata's three photo measurements (unrounded)."""
    return {
        "image_measurement_value": drawing.measurement,
        "area_fraction": drawing.area_fraction,
        "scale_factor": drawing.scale_factor,
    }


def simulate_demo(n_specimens: int = DEFAULT_SPECIMENS, seed: int = 0, photos: bool = True) -> Simulation:
    """The demo's specimens in memory, images planned but not drawn (``generate_demo`` writes them);
    ``photos=False``: the metadata alone (module docstring)."""
    tree_rng, dna_rng, split_rng, image_rng, meta_rng = np.random.default_rng(seed).spawn(5)
    n_orders = int(np.clip(n_specimens // 300 + 4, 5, len(ORDERS)))
    tree = build_tree(tree_rng, max(20, n_specimens // SPECIMENS_PER_SPECIES), n_orders)
    total, labelled = specimen_counts(split_rng, tree, n_specimens)
    species, haplotype, haplotype_species = haplotypes(split_rng, total)
    codes = evolve(dna_rng, tree, haplotype_species)
    # One read per specimen, a block at a time, kept as Arrow strings (~1 B a base, not numpy's 4).
    reads: list[pa.Array] = []
    for rows in _blocks(n_specimens):
        block = pa.array(read_barcodes(dna_rng, codes[haplotype[rows]]))  # large blocks come back chunked
        reads += block.chunks if isinstance(block, pa.ChunkedArray) else [block]
    barcodes = pd.arrays.ArrowStringArray(pa.chunked_array(reads, pa.string()))
    del codes, reads
    split, depth = assign_splits(split_rng, tree, species, barcode_groups(haplotype, barcodes), labelled)

    shuffle = meta_rng.permutation(n_specimens)
    species, depth, split, barcodes = species[shuffle], depth[shuffle], split[shuffle], barcodes[shuffle]
    traits = body_traits(image_rng, tree, species)
    if photos:
        drawing = plan_drawings(image_rng, traits)
        measures = _photo_columns(drawing)
    else:  # only the three measurements of each block's planned drawings are kept
        drawing = None
        parts = [_photo_columns(plan_drawings(image_rng, {k: v[rows] for k, v in traits.items()}))
                 for rows in _blocks(n_specimens)]  # fmt: skip
        measures = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return Simulation(build_metadata(meta_rng, tree, species, depth, split, barcodes, measures), drawing, image_rng)


def generate_demo(
    out: Path, n_specimens: int = DEFAULT_SPECIMENS, seed: int = 0, photos: bool = True
) -> pd.DataFrame:
    """Simulate ``n_specimens`` specimens, write them under ``out`` and return the metadata table
    (``photos=False``: the metadata CSV alone)."""
    final = Path(out) / FOLDER
    if final.exists():
        raise FileExistsError(f"{final} already exists: remove it or choose another folder")
    simulation = simulate_demo(n_specimens, seed, photos)
    table = simulation.table

    final.parent.mkdir(parents=True, exist_ok=True)
    root = final.parent / f".{FOLDER}.partial-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)  # left by an earlier run of this same pid
    try:
        if simulation.drawing is not None:
            chunk_dir = (table["chunk"] + "/").fillna("")
            relpaths = "images/cropped_256/" + table["split"] + "/" + chunk_dir + table["processid"] + ".jpg"
            paths = [root / p for p in relpaths]
            for folder in sorted({p.parent for p in paths}):  # creates root too
                folder.mkdir(parents=True, exist_ok=True)
            write_images(simulation.image_rng, simulation.drawing, paths)
        (root / METADATA_FILE).parent.mkdir(parents=True)
        table.to_csv(root / METADATA_FILE, index=False, lineterminator="\n")
        root.rename(final)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return table


def ensure_demo(data_cfg: DataConfig) -> None:
    """Generate the demo dataset at ``data_cfg.root`` if it asks for one and it is not there yet."""
    root = Path(data_cfg.root)
    if data_cfg.demo_specimens > 0 and not (root / FOLDER / METADATA_FILE).is_file():
        generate_demo(root, data_cfg.demo_specimens, data_cfg.demo_seed)
