"""``clibd serve`` against ``clibd classify`` on the same real photos (the 40 shared BIOSCAN
photos, cycled under distinct names), with the same model and library.

Rows: a batch of 100 photos with the demo config's towers (goal: >= 0.8x the CLI), and one
photo with the paper config's towers (the latency a person waits for; no goal). Models are
untrained, saved as runs; libraries: real BOLD barcodes embedded as keys, with a nominal
threshold (this measures speed only). Baseline: what ``clibd classify --images DIR`` does
after start-up (``specimen_chunks`` with the quality checks -> ``search_specimens``), in process. Ours: the
real app under uvicorn on loopback, the photos POSTed by an HTTP client as the page sends
them (chunks of 25, two in flight), timed from the first request to the last answer. Timed in turns, best
of ``rounds``; the server's start-up (model + library load) is in the note.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from bench.common import SHARED_DATA, Result
from bench.compute import build_model, load_bench_config
from clibd.config import save_config
from clibd.embed.embedder import Embedder
from clibd.embed.inputs import specimen_chunks
from clibd.embed.records import photo_files
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.classify_specimens import search_specimens
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.library import load_library
from clibd.taxonomy import ALL_RANKS

PHOTOS, KEYS = 100, 500
CHUNK, IN_FLIGHT = 25, 2  # as the page (clibd/serve/static/app.js) sends a batch


def run(device: str, quick: bool) -> list[Result]:
    rounds = 1 if quick else 3
    results = [_compare("demo", device, PHOTOS, KEYS, rounds)]
    if not quick:  # the paper's towers: one photo, the latency a person waits for
        results.append(_compare("paper", device, 1, 40, rounds))
    return results


def _compare(size: str, device: str, n_photos: int, n_keys: int, rounds: int) -> Result:
    """The server against the CLI's pipeline on ``n_photos`` photos, timed in turns."""
    import httpx
    import uvicorn

    from clibd.serve.app import build_app
    from clibd.serve.service import Classifier

    work = Path(tempfile.mkdtemp(prefix="clibd-bench-serve-"))
    try:
        checkpoint, index_dir, photos = prepare_run(work, size, device, n_photos, n_keys)
        started = time.perf_counter()
        classifier = Classifier(checkpoint, index_dir, k=5, device=device)
        load_s = time.perf_counter() - started
        server, url = _start(uvicorn, build_app(classifier))
        embedder = Embedder(checkpoint, device=device)
        library = load_library(index_dir, embedder)
        files = [(p.name, p.read_bytes()) for p in sorted(photos.iterdir())]
        with httpx.Client(base_url=url, timeout=600) as client:

            def post(part: list[tuple[str, bytes]]) -> int:
                files_ = [("photos", (name, data, "image/jpeg")) for name, data in part]
                return client.post("/api/classify", files=files_).json()["counts"]["rows"]

            def serve() -> None:  # as the page sends a batch: chunks of CHUNK photos, IN_FLIGHT at a time
                chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
                with ThreadPoolExecutor(IN_FLIGHT) as pool:
                    assert sum(pool.map(post, chunks)) == len(files)

            def cli() -> None:  # `clibd classify --images DIR` after start-up
                chunks = specimen_chunks(embedder, photo_files([str(photos)])[0])
                assert sum(len(search_specimens(library, inputs, 5).table) for inputs in chunks) == len(files)

            serve()  # warm-up: thread pool, allocator, first-call paths on both sides
            cli()
            best = {"serve": float("inf"), "cli": float("inf")}
            cpu = {}  # CPU seconds of the process (server and client threads) in the best round
            for _ in range(rounds):  # in turns, so both sides see the same load
                for name, fn in (("serve", serve), ("cli", cli)):
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    if time.perf_counter() - t < best[name]:
                        best[name], cpu[name] = time.perf_counter() - t, time.process_time() - c
        server.should_exit = True
        what = f"{n_photos} real photo{'s' if n_photos > 1 else ''}, {size} model, {n_keys} keys, {device}"
        return Result.timed(
            "serve vs classify" if n_photos > 1 else "serve one photo",
            f"{what}, POST over loopback (chunks of {CHUNK}, {IN_FLIGHT} in flight); best of {rounds} in turns",
            n_photos,
            best["serve"],
            best["cli"],
            "photos/s",
            0.8 if n_photos > 1 else None,
            note=f"server answered in {best['serve'] * 1000:.0f} ms (CPU {cpu['serve']:.2f} s, "
            f"CLI {cpu['cli']:.2f} s); its start-up (model + library) {load_s:.1f} s",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare_run(work: Path, size: str, device: str, n_photos: int, n_keys: int) -> tuple[Path, Path, Path]:
    """A saved run (untrained ``size`` model), a library of ``n_keys`` real barcodes, ``n_photos`` photo files."""
    cfg = load_bench_config(size)
    model = build_model(cfg)
    cfg.model = model.cfg
    save_config(cfg, work / "run" / "config.yaml")
    checkpoint = model.save_pretrained(work / "run" / "model")
    bold = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t", dtype=str).iloc[:n_keys]
    taxonomy = bold.rename(columns={f"{rank}_name": rank for rank in ALL_RANKS}).reindex(columns=list(ALL_RANKS))
    real = sorted((SHARED_DATA / "images").glob("*.jpg"))
    taxonomy["image_ref"] = [str(real[i % len(real)]) for i in range(len(bold))]
    emb, ids = Embedder(checkpoint, device=device).embed_dna(bold["nucleotides"].tolist(), bold["processid"].tolist())
    thresholds = {m: {"threshold": 0.5} for m in ("image", "dna")}  # nominal: this measures speed only
    index = ReferenceIndex(
        emb.shape[1],
        checkpoint_hash=checkpoint_hash(checkpoint),
        metadata={"modality": "dna", "thresholds": thresholds},
    )
    index.add(emb, ids, taxonomy.astype("string"))
    index.save(work / "index")
    photos = work / "photos"
    photos.mkdir()
    for i in range(n_photos):
        shutil.copy(real[i % len(real)], photos / f"{i:03d}_{real[i % len(real)].name}")
    return checkpoint, work / "index", photos


def _start(uvicorn, app) -> tuple[object, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start in 60 s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"
