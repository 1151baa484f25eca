"""The barcodes of a library's keys, for the % identity of DNA hits (``clibd.index.identity``).

Saved beside the index as ``barcodes.arrow`` (Arrow IPC, one ``large_string`` column in key
order, as read, on the library's strand: ``clibd.index.strand``; null for a key without one)
and memory-mapped on load: a library of millions of keys keeps none of them in RAM, and only
the barcodes of the hits being aligned are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

BARCODES_FILE = "barcodes.arrow"
_COLUMN = "dna_barcode"


class KeyBarcodes:
    """``KeyBarcodes(sequences)``; ``take(positions) -> list[str | None]``; ``save`` / ``load``."""

    def __init__(self, sequences: pa.Array | Sequence[Optional[str]]) -> None:
        self.sequences = sequences if isinstance(sequences, pa.Array) else pa.array(sequences, type=pa.large_string())

    def __len__(self) -> int:
        return len(self.sequences)

    def take(self, positions: np.ndarray) -> list[Optional[str]]:
        """The barcodes at key ``positions`` (any shape, flattened; ``-1``: None)."""
        flat = np.asarray(positions, dtype=np.int64).ravel()
        missing = flat < 0
        return self.sequences.take(pa.array(np.where(missing, 0, flat), mask=missing)).to_pylist()

    def save(self, directory: str | Path) -> str:
        """Write ``barcodes.arrow``; returns its name (the library's manifest lists it)."""
        table = pa.table({_COLUMN: self.sequences.cast(pa.large_string())})
        with ipc.new_file(Path(directory) / BARCODES_FILE, table.schema) as writer:
            writer.write_table(table)
        return BARCODES_FILE

    @classmethod
    def load(cls, directory: str | Path, expected: int) -> Optional["KeyBarcodes"]:
        """The library's barcodes (memory-mapped), or None when it has none (a library built from a
        table without barcodes, or before they were stored). ``expected``: the library's key count."""
        path = Path(directory) / BARCODES_FILE
        if not path.is_file():
            return None
        try:
            column = ipc.open_file(pa.memory_map(str(path))).read_all().column(_COLUMN)
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # one chunk: no copy
        except (pa.ArrowInvalid, KeyError, OSError) as err:
            raise ValueError(f"library {directory}: {BARCODES_FILE} cannot be read ({err})") from None
        if len(column) != expected:
            raise ValueError(f"library {directory}: {BARCODES_FILE} holds {len(column)} barcodes for {expected} keys")
        return cls(column)
