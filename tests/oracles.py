"""Plain reference implementations that the fast code is checked against."""

from __future__ import annotations

import itertools

import numpy as np

from clibd.data.dna_tokenizer import VOCAB_LAYOUTS


def kmer_tokenize_reference(
    sequences: list[str], k: int, vocab: str, max_nucleotides: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One dict look-up per k-mer, one sequence at a time: the documented rules, spelt out."""
    stride = stride or k
    specials = VOCAB_LAYOUTS[vocab]
    table = {"".join(p): i + len(specials) for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    unk = len(specials) - 1
    prefix = [specials.index("<CLS>")] if "<CLS>" in specials else []
    ids, masks = [], []
    for seq in sequences:
        s = seq.encode("ascii", "replace").decode()  # any non-ASCII character -> "?"
        s = s.translate({ord(c): None for c in "-. \t\r\n\v\f"}).upper().rstrip("N")[:max_nucleotides]
        n_real = len(s)
        s = s.ljust(max_nucleotides, "N")
        starts = range(0, max_nucleotides - k + 1, stride)
        ids.append(prefix + [table.get(s[i : i + k], unk) for i in starts])
        masks.append([1] * len(prefix) + [int(i < n_real) for i in starts])
    return np.array(ids), np.array(masks)


def original_sequence_pipeline(sequences: list[str], k: int = 5, max_len: int = 660) -> np.ndarray:
    """The published CLIBD's DNA token ids, spelt out from its code (commit 7d73f80):
    ``bioscanclip/model/dna_encoder.py`` ``get_sequence_pipeline`` (lines 53-63):
    ``[0, *vocab(tokenizer(pad(x)))]`` with ``pad = PadSequence(660)`` (``bioscanclip/util/util.py``
    lines 77-85: cut to 660 characters or right-padded with "N"), ``tokenizer = KmerTokenizer(k,
    stride=k)`` (lines 88-98: every k-th k-mer, as it is) and torchtext's
    ``build_vocab_from_iterator(product("ACGT", repeat=k), specials=["<MASK>", "<CLS>", "<UNK>"])``
    with ``<UNK>`` as the default index (equal counts: the k-mers sorted, i.e. product order)."""
    vocab = {"".join(kmer): i + 3 for i, kmer in enumerate(itertools.product("ACGT", repeat=k))}
    unk = 2
    rows = []
    for x in sequences:
        padded = x[:max_len] if len(x) > max_len else x + "N" * (max_len - len(x))
        kmers = [padded[i : i + k] for i in range(0, len(padded) - k + 1, k)]
        rows.append([0, *[vocab.get(kmer, unk) for kmer in kmers]])
    return np.array(rows)


def topk_accuracy_reference(
    query_labels: np.ndarray, neighbour_labels: np.ndarray, ks: tuple[int, ...], ranks: tuple[str, ...]
) -> dict:
    """Per query, per rank, per k: is the label among the first k neighbours' labels? (clibd.eval.metrics rules)"""
    queries, neighbours = np.asarray(query_labels).tolist(), np.asarray(neighbour_labels).tolist()
    out: dict = {"micro": {}, "macro": {}}
    for j, rank in enumerate(ranks):
        out["micro"][rank], out["macro"][rank] = {}, {}
        for k in ks:
            hits: dict[int, int] = {}
            counts: dict[int, int] = {}
            for label_row, neighbour_rows in zip(queries, neighbours):
                label = label_row[j]
                if label < 0:
                    continue
                found = label in [row[j] for row in neighbour_rows[:k]]
                hits[label] = hits.get(label, 0) + found
                counts[label] = counts.get(label, 0) + 1
            n = sum(counts.values())
            out["micro"][rank][f"top{k}"] = sum(hits.values()) / n if n else float("nan")
            per_class = [hits[c] / counts[c] for c in counts]
            out["macro"][rank][f"top{k}"] = sum(per_class) / len(per_class) if per_class else float("nan")
    return out
