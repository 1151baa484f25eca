"""Percent identity from parasail's semi-global alignment (clibd.data.alignment)."""

import numpy as np
import pandas as pd
import pytest

from clibd.data.alignment import clean_barcode, percent_identity
from tests.data_paths import BOLD_4K

UNIT = "ACGTACGTAAGGCCTTACGTTGCA"


def test_cleaning_keeps_acgtn_only() -> None:
    assert clean_barcode("nnAC-gtU.x\u00e9T Rg nn") == "ACGTTNNTNG"


def test_end_gaps_are_free_on_both_sequences() -> None:
    # Staggered reads: the query starts first, the reference ends last; the 10 shared bases agree.
    ident = percent_identity("AAAACCCCGGGGAC", ["CCCCGGGGACTTTT"], min_overlap=1)
    assert ident.identity.tolist() == [100.0] and ident.overlap.tolist() == [10]


def test_mismatch_inner_gap_and_unread_base() -> None:
    long = UNIT * 10  # 240 nt
    refs = ["CCCCGGTGAC", "CCCCNGGGAC", long[:100] + long[101:]]
    ident = percent_identity("AAAACCCCGGGGAC", refs[:2], min_overlap=1)
    assert ident.identity.tolist() == [90.0, 100.0]  # one mismatch in 10; N agrees with anything
    deleted = percent_identity(long, refs[2:])
    assert deleted.overlap.tolist() == [240] and deleted.identity[0] == pytest.approx(100 * 239 / 240)


def test_short_or_empty_overlap_has_no_identity() -> None:
    ident = percent_identity(UNIT * 10, ["", "NNNN", (UNIT * 10)[::-1]])
    assert np.isnan(ident.identity).all()  # the reversed read shares only a chance few bases
    assert ident.overlap[:2].tolist() == [0, 0] and 0 < ident.overlap[2] < 100


@pytest.mark.skipif(not BOLD_4K.is_file(), reason=f"real barcodes not found at {BOLD_4K}")
def test_real_barcodes_same_species_closer_than_other_genera() -> None:
    table = pd.read_csv(BOLD_4K, sep="\t", dtype="string").head(400)
    name = table["species_name"].value_counts().index[0]
    genus = table.loc[table["species_name"] == name, "genus_name"].iloc[0]
    same = table.loc[table["species_name"] == name, "nucleotides"].tolist()
    other = table.loc[table["genus_name"] != genus, "nucleotides"].head(50).tolist()
    within = percent_identity(same[0], same[1:])
    between = percent_identity(same[0], other)
    assert np.nanmin(within.identity) > 97.0  # real conspecific COI reads
    assert np.nanmax(between.identity) < 92.0
    assert (between.overlap >= 300).all()
