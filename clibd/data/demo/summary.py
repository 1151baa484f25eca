"""A plain-text summary of a BIOSCAN-5M-style metadata table: records, distinct names and
barcode lengths per split."""

from __future__ import annotations

import pandas as pd

from clibd.data.sources.bioscan5m import SPLITS

SUMMARY_RANKS = ("order", "family", "subfamily", "genus", "species", "dna_bin")


def summarise(table: pd.DataFrame) -> str:
    splits = [s for s in SPLITS if s in set(table["split"])] + sorted(set(table["split"]) - set(SPLITS))
    by_split = table.groupby(table["split"].astype(str), observed=True)
    lengths = table["dna_barcode"].str.len()
    rows = pd.DataFrame({"records": by_split.size()})
    rows = rows.join(by_split[list(SUMMARY_RANKS)].nunique())
    rows["barcode_nt"] = lengths.groupby(table["split"].astype(str)).agg(lambda x: f"{x.min()}-{x.max()}")
    rows = rows.reindex(splits).astype(object)
    total = {
        "records": len(table),
        **{r: table[r].nunique() for r in SUMMARY_RANKS},
        "barcode_nt": f"{lengths.min()}-{lengths.max()}",
    }
    rows.loc["all"] = pd.Series(total)
    labelled = {r: f"{table[r].notna().mean():.1%}" for r in SUMMARY_RANKS}
    rows.loc["labelled"] = pd.Series({"records": "", **labelled, "barcode_nt": ""})
    return rows.rename_axis("split").to_string()
