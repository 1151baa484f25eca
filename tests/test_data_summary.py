"""``clibd data-summary``: counts per split and role, names per rank, longest text, skip report."""

from __future__ import annotations

from clibd.cli import main
from tests.data_paths import BOLD_4K, needs_shared_data
from tests.helpers.bioscan_root import make_bioscan5m_root


def test_data_summary_of_a_bioscan5m_root(tmp_path, capsys):
    meta = make_bioscan5m_root(tmp_path)
    meta.loc[meta["processid"] == "YGEN995-22", "dna_barcode"] = ""
    make_bioscan5m_root(tmp_path, meta)
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  format: bioscan5m\n  bad_records: skip\n")
    assert main(["data-summary", "--config", str(config), f"data.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert f"13 specimens from bioscan5m {tmp_path}" in out
    assert "  pretrain                         3 rows       0 species" in out
    assert "  test                             1 rows       1 species" in out
    assert "  keys                             3 rows" in out  # train 2 + key_unseen 1
    assert "  train                            5 rows" in out  # pretrain 3 + train 2
    assert "  species                          6 (10 labelled)" in out
    assert "longest taxonomy text (56 characters): 'Hymenoptera not_classified not_classified not_classified'" in out
    assert "longest species name (21 characters): 'Apanteles aidalopezae'" in out
    assert "bad records (skip): skipped 1 of 14 records: 1 empty or all-N barcode (e.g. YGEN995-22)" in out


@needs_shared_data
def test_data_summary_of_real_bold_tsv(tmp_path, capsys):
    config = tmp_path / "bold.yaml"
    config.write_text(
        f"data:\n  format: tabular\n  root: {BOLD_4K}\n  columns:\n    order: order_name\n    family: family_name\n"
        "    genus: genus_name\n    species: species_name\n    dna_barcode: nucleotides\n"
    )
    assert main(["data-summary", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4278 specimens from tabular" in out and "per role" not in out
    assert "  order                           13 (4278 labelled)" in out
    assert "no records skipped (4278 read)" in out
