"""``clibd classify`` over many specimens: peak memory and rate against the input size.

Barcodes: 20k, 100k, 300k and 1M records (``--sizes``) through ``clibd classify --dna F.fasta
--format csv --out OUT``, each a fresh process, with the demo config's towers (untrained: this
measures memory and speed, not accuracy) against a library of the 4,278 real BOLD barcodes.
The records are those real barcodes, copy after copy, each copy with 1 % of its bases changed
at random (every record differs; nothing large is committed: the FASTA is written to a
temporary folder). Photos: small generated photos (96 px wells with a dark specimen, JPEG;
200 drawn, hard-linked under new names) through ``clibd classify --images DIR``.

Per run: the peak RSS of the ``clibd`` process (``getrusage`` of the only child of a wrapper
process), the wall time including start-up, records/s, and both as ratios to the smallest run.
Goal (issue 22): the 1M-record run in <= 1.5 GiB at >= 0.8x the 20k run's rate; the same for
100k photos. ``--baseline-code DIR`` also runs the code of another checkout (e.g. the main
branch, which tokenised every record at once) at the sizes ``--baseline-sizes``, in the same
session, for the memory it needed.

``python bench/stream_classify.py [--sizes ...] [--photos ...] [--json bench/stream_classify.json]``
(``make bench`` runs the small sizes only: ``run(device, quick)``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from bench.common import REPO, SHARED_DATA, Result  # noqa: E402

GiB = 1 << 30
MEMORY_GOAL_GIB, RATE_GOAL = 1.5, 0.8
# The peak RSS of the one child this wrapper runs (a fresh process: nothing else in its counts).
WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def prepare_model(work: Path) -> tuple[Path, Path]:
    """An untrained demo-config run and a library of the real BOLD barcodes (nominal thresholds)."""
    from bench.compute import build_model, load_bench_config
    from clibd.config import save_config
    from clibd.embed.embedder import Embedder
    from clibd.embed.run_dir import checkpoint_hash
    from clibd.index.faiss_index import ReferenceIndex
    from clibd.taxonomy import ALL_RANKS

    cfg = load_bench_config("demo")
    model = build_model(cfg)
    cfg.model = model.cfg
    save_config(cfg, work / "run" / "config.yaml")
    checkpoint = model.save_pretrained(work / "run" / "model")
    bold = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t", dtype=str)
    taxonomy = bold.rename(columns={f"{rank}_name": rank for rank in ALL_RANKS}).reindex(columns=list(ALL_RANKS))
    emb, ids = Embedder(checkpoint, device="cpu").embed_dna(bold["nucleotides"].tolist(), bold["processid"].tolist())
    thresholds = {m: {"threshold": 0.5} for m in ("image", "dna")}  # nominal: this measures memory and speed
    index = ReferenceIndex(emb.shape[1], checkpoint_hash=checkpoint_hash(checkpoint), metadata={"modality": "dna"})
    index.metadata["thresholds"] = thresholds
    index.add(emb, ids, taxonomy.astype("string"))
    index.save(work / "index")
    return checkpoint, work / "index"


def write_barcodes(path: Path, n: int, seed: int = 0) -> None:
    """``n`` FASTA records: the real barcodes copy after copy, 1 % of each copy's bases changed."""
    bold = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t", dtype=str)
    seqs = [s.encode() for s in bold["nucleotides"]]
    bounds = np.cumsum([0] + [len(s) for s in seqs])
    base = np.frombuffer(b"".join(seqs), np.uint8)
    acgt = np.isin(base, np.frombuffer(b"ACGT", np.uint8))
    rng = np.random.default_rng(seed)
    written = 0
    with path.open("wb") as f:
        for copy in range((n + len(seqs) - 1) // len(seqs)):
            mutated = base.copy()
            at = acgt & (rng.random(len(base)) < 0.01)
            mutated[at] = rng.choice(np.frombuffer(b"ACGT", np.uint8), int(at.sum()))
            data = mutated.tobytes()
            take = min(len(seqs), n - written)
            f.write(
                b"".join(
                    b">%s-c%d\n%s\n" % (bold["processid"].iat[i].encode(), copy, data[bounds[i] : bounds[i + 1]])
                    for i in range(take)
                )
            )
            written += take


def write_photos(folder: Path, n: int, distinct: int = 200, seed: int = 0) -> None:
    """``n`` photos in sub-folders of 10,000: ``distinct`` drawn wells hard-linked under new names."""
    rng = np.random.default_rng(seed)
    drawn = folder / "drawn"
    drawn.mkdir(parents=True)
    for i in range(distinct):
        image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(170, 230, 3)))
        draw = ImageDraw.Draw(image)
        x, y, w, h = rng.integers(20, 40), rng.integers(20, 40), rng.integers(15, 40), rng.integers(10, 30)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(20, 90, 3)))
        image.filter(ImageFilter.GaussianBlur(0.6)).save(drawn / f"{i}.jpg", quality=90)
    for i in range(n):
        sub = folder / "photos" / f"{i // 10_000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        os.link(drawn / f"{i % distinct}.jpg", sub / f"p{i:07d}.jpg")


def measure(code: Path, checkpoint: Path, index: Path, inputs: list[str], out: Path) -> dict:
    """One ``clibd classify`` process on ``inputs``: peak RSS, wall seconds, rows written."""
    cli = [sys.executable, "-m", "clibd.cli", "classify", "--checkpoint", str(checkpoint), "--index", str(index)]
    command = [sys.executable, "-c", WRAPPER, *cli, *inputs, "--format", "csv", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"clibd classify failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = sum(1 for _ in out.open()) - 1
    return {"peak_rss_gib": int(done.stdout.split()[-1]) * 1024 / GiB, "seconds": seconds, "rows": rows}


def curve(kind: str, sizes: list[int], code: Path, checkpoint: Path, index: Path, work: Path) -> list[dict]:
    """The runs of one input kind, smallest first, each with its ratios to the smallest."""
    runs = []
    for n in sizes:
        if kind == "dna":
            data = work / f"dna-{n}.fasta"
            write_barcodes(data, n)
            inputs = ["--dna", str(data)]
        else:
            data = work / f"photos-{n}"
            write_photos(data, n)
            inputs = ["--images", str(data / "photos")]
        load = os.getloadavg()[0]
        run = {
            "kind": kind,
            "records": n,
            "code": str(code),
            **measure(code, checkpoint, index, inputs, work / "out.csv"),
        }
        run["rate"] = n / run["seconds"]
        run["load_before"] = round(load, 2)
        assert run["rows"] == n, f"{n} inputs gave {run['rows']} rows"
        runs.append(run)
        subprocess.run(["rm", "-rf", str(data)], check=True)
        first = runs[0]
        run["rss_ratio"], run["rate_ratio"] = run["peak_rss_gib"] / first["peak_rss_gib"], run["rate"] / first["rate"]
        print(
            f"{kind} {n:>9,}: peak RSS {run['peak_rss_gib']:.2f} GiB ({run['rss_ratio']:.2f}x), "
            f"{run['seconds']:.0f} s, {run['rate']:,.0f} records/s ({run['rate_ratio']:.2f}x of {first['records']:,})"
            f" [{Path(code).name}, load {load:.1f}]",
            flush=True,
        )
    return runs


def results(runs: list[dict]) -> list[Result]:
    """Bench rows: the largest run of each kind against the smallest (memory goal in the note)."""
    rows = []
    for kind in ("dna", "image"):
        mine = [r for r in runs if r["kind"] == kind and r["code"] == str(REPO)]
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        what = "barcode records" if kind == "dna" else "generated photos"
        rows.append(
            Result(
                "classify streaming",
                f"{large['records']:,} {what} vs {small['records']:,}, clibd classify --format csv --out, demo model",
                large["rate"],
                small["rate"],
                "records/s",
                large["rate"] / small["rate"],
                RATE_GOAL,
                note=f"peak RSS {large['peak_rss_gib']:.2f} GiB (goal <= {MEMORY_GOAL_GIB}) vs "
                f"{small['peak_rss_gib']:.2f} GiB; memory met: {large['peak_rss_gib'] <= MEMORY_GOAL_GIB}",
            )
        )
    return rows


def run(device: str, quick: bool) -> list[Result]:
    """``make bench``: 20k and 100k barcodes (the full curve: run this file)."""
    with tempfile.TemporaryDirectory(prefix="clibd-bench-stream-") as folder:
        work = Path(folder)
        checkpoint, index = prepare_model(work)
        sizes = [5_000, 20_000] if quick else [20_000, 100_000]
        return results(curve("dna", sizes, REPO, checkpoint, index, work))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--photos", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--baseline-code", type=Path, help="another checkout to measure (e.g. /path/to/main)")
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "stream_classify.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clibd-bench-stream-", dir=args.work) as folder:
        work = Path(folder)
        checkpoint, index = prepare_model(work)
        runs = curve("dna", args.sizes, REPO, checkpoint, index, work) if args.sizes else []
        if args.baseline_code and args.baseline_sizes:
            runs += curve("dna", args.baseline_sizes, args.baseline_code, checkpoint, index, work)
        runs += curve("image", args.photos, REPO, checkpoint, index, work) if args.photos else []
    rows = results(runs)
    for row in rows:
        print(json.dumps(row.as_dict()))
    args.json.write_text(json.dumps({"runs": runs, "results": [r.as_dict() for r in rows]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
