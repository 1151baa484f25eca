"""Generic CSV/TSV/parquet specimen tables, with a column mapping from ``cfg.data.columns``.

``columns`` maps our name -> the file's column, e.g. for BOLD's BarcodeBERT export
``{order: order_name, family: family_name, genus: genus_name, species: species_name,
dna_barcode: nucleotides, dna_bin: bin_uri}``. An unmapped specimen column is taken from
the file column of the same name when there is one, else from the first of its ``ALIASES``
the file has (BOLD's public TSV ``order_name`` ... ``nucleotides``, ``bin_uri``; BOLD data
packages' ``nuc``; BIOSCAN-1M's ``uri``), else left ``<NA>``: a BOLD export reads without a
mapping. ``processid`` must exist. A mapped column missing from the file is an error naming it and the file. Relative
``image_ref`` paths are relative to the table file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from clibd.data.images import H5_SCHEME
from clibd.data.sources.delimited import read_delimited, table_columns
from clibd.data.specimens import SPECIMEN_COLUMNS, normalise_table
from clibd.taxonomy import ALL_RANKS

# Columns a mapping may fill: the specimen table's, plus the collector's id.
MAPPABLE: tuple[str, ...] = (*SPECIMEN_COLUMNS, "sampleid")
# Other file spellings of our columns, in order of preference (module docstring).
ALIASES: dict[str, tuple[str, ...]] = {
    **{rank: (f"{rank}_name",) for rank in ALL_RANKS},
    "dna_barcode": ("nucleotides", "nuc", "sequence", "seq"),
    "dna_bin": ("bin_uri", "uri"),
}


def _file_column(ours: str, columns: Mapping[str, str], present: list[str]) -> str | None:
    """The file column that fills ``ours``: mapped, same name, or the first alias present."""
    if ours in columns:
        return columns[ours]
    return next((name for name in (ours, *ALIASES.get(ours, ())) if name in present), None)


def read_tabular(path: str | Path, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    path = Path(path).resolve()
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(MAPPABLE))
    if unknown:
        raise ValueError(f"data.columns maps unknown specimen column(s) {unknown}; allowed: {list(MAPPABLE)}")
    present = table_columns(path)
    found = {ours: _file_column(ours, columns, present) for ours in MAPPABLE}
    use = {ours: theirs for ours, theirs in found.items() if theirs is not None}
    required = [*columns.values(), columns.get("processid", "processid")]
    df = read_delimited(path, required=required, columns=list(dict.fromkeys(use.values())))
    table = pd.DataFrame({ours: df[theirs] for ours, theirs in use.items()})
    if "image_ref" in table:
        ref = table["image_ref"].astype("string").str.strip()
        absolute = (ref.str.startswith("/") | ref.str.startswith(H5_SCHEME)).fillna(True)
        table["image_ref"] = ref.where(absolute, f"{path.parent}/" + ref)
    return normalise_table(table)
