"""Any labelled table a biologist has, read for a reference library (``clibd index build --from``).

- FASTA (``.fa`` ``.fasta`` ``.fas`` ``.fna``): headers ``>processid|split|order|family|genus|species``
  (``clibd.data.sources.fasta``; the split field may be empty and is not used);
- CSV / TSV / parquet: a BOLD public TSV (``order_name`` ... ``species_name``, ``nucleotides``,
  ``bin_uri``), a BOLD data package (``order`` ... ``species``, ``nuc``, ``None`` for unknown), the
  BIOSCAN-5M metadata CSV, or any table under our column names (``clibd.data.sources.tabular``
  recognises them without a mapping). A split column, if any, is not used: every usable row is a key.

Bad records are skipped and counted by reason (``clibd.data.specimens.validate_table`` under
``skip``): no processid, a duplicate processid, no barcode (when barcodes are required), no photo
(when photos are required). ``image_refs`` (processid -> photo file) fills ``image_ref`` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import pandas as pd

from clibd.data.bad_records import SkipReport
from clibd.data.sources.fasta import FASTA_SUFFIXES, read_fasta
from clibd.data.sources.tabular import read_tabular
from clibd.data.specimens import validate_table


def read_labelled_table(
    path: str | Path,
    require_dna: bool,
    require_image: bool,
    image_refs: Optional[Mapping[str, str]] = None,
) -> tuple[pd.DataFrame, SkipReport]:
    """The specimen table of ``path`` (module docstring) with its bad records skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled table not found: {path}")
    table = read_fasta(path) if path.suffix.lower() in FASTA_SUFFIXES else read_tabular(path)
    table["split"] = pd.array([pd.NA] * len(table), dtype="string")  # every usable row is a key
    if image_refs is not None:
        found = table["processid"].map(dict(image_refs)).astype("string")
        table["image_ref"] = found.fillna(table["image_ref"])
    return validate_table(table, str(path), "skip", require_dna=require_dna, require_image=require_image)
