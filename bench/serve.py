"""``clibd serve`` against ``clibd classify`` on the same 100 real photos (the 40 shared
BIOSCAN photos, cycled under distinct names), with the same model and library.

Model: the paper config's towers (``--quick``: the demo config's), untrained, saved as a run;
library: 500 real BOLD barcodes embedded as keys (with a nominal threshold: speed only).
Baseline: what ``clibd classify --images DIR`` does after start-up (``embed_specimens`` ->
search -> ``predict_taxonomy``), in process. Ours: the real app under uvicorn on loopback,
the 100 photos POSTed by an HTTP client as the page sends them (chunks of 16), timed from the
first request to the last answer. Both are timed in turns, best of ``rounds``. Also
reported (no goal): one photo's round trip, and the server's start-up (model + library load).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from bench.common import SHARED_DATA, Result
from bench.compute import build_model, load_bench_config
from clibd.config import save_config
from clibd.embed.embedder import Embedder
from clibd.embed.inputs import embed_specimens
from clibd.embed.run_dir import checkpoint_hash
from clibd.index.faiss_index import ReferenceIndex
from clibd.index.library import load_library
from clibd.index.vote import predict_taxonomy
from clibd.taxonomy import ALL_RANKS

PHOTOS, KEYS, CHUNK = 100, 500, 16


def run(device: str, quick: bool) -> list[Result]:
    import httpx
    import uvicorn

    from clibd.serve.app import build_app
    from clibd.serve.service import Classifier

    work = Path(tempfile.mkdtemp(prefix="clibd-bench-serve-"))
    try:
        checkpoint, index_dir, photos = _prepare(work, "demo" if quick else "paper", device)
        started = time.perf_counter()
        classifier = Classifier(checkpoint, index_dir, k=5, device=device)
        load_s = time.perf_counter() - started
        server, url = _start(uvicorn, build_app(classifier))
        embedder = Embedder(checkpoint, device=device)
        library = load_library(index_dir, embedder)
        files = [(p.name, p.read_bytes()) for p in sorted(photos.iterdir())]
        with httpx.Client(base_url=url, timeout=600) as client:
            def serve_batch() -> None:
                for start in range(0, len(files), CHUNK):
                    part = [("photos", (name, data, "image/jpeg")) for name, data in files[start:start + CHUNK]]
                    assert client.post("/api/classify", files=part).json()["counts"]["rows"] == len(part)

            def serve_one() -> None:
                name, data = files[0]
                assert client.post("/api/classify", files=[("photos", (name, data, "image/jpeg"))]).is_success

            def cli_batch() -> None:
                emb, ids, _, _ = embed_specimens(embedder, [str(photos)])
                scores, positions = library.search(emb, 5)
                predict_taxonomy(scores, positions, library.taxonomy, library.ids, ids,
                                 library.metadata["thresholds"]["image"]["threshold"])

            serve_one()  # first request: thread pool, allocator warm-up
            rounds = 1 if quick else 3
            best = {"serve": float("inf"), "cli": float("inf"), "one": float("inf")}
            for _ in range(rounds):  # in turns, so both sides see the same load
                for name, fn in (("serve", serve_batch), ("cli", cli_batch), ("one", serve_one)):
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t)
        server.should_exit = True
        size = "demo" if quick else "paper"
        return [
            Result.timed("serve vs classify", f"{PHOTOS} real photos, {size} model, {KEYS} keys, {device}, "
                         f"POST in chunks of {CHUNK} over loopback; best of {rounds} in turns",
                         PHOTOS, best["serve"], best["cli"], "photos/s", 0.8,
                         note=f"one photo answered in {best['one'] * 1000:.0f} ms; server start-up {load_s:.1f} s"),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(work: Path, size: str, device: str) -> tuple[Path, Path, Path]:
    """A saved run (untrained ``size`` model), a library of real barcodes, 100 photo files."""
    cfg = load_bench_config(size)
    model = build_model(cfg)
    cfg.model = model.cfg
    save_config(cfg, work / "run" / "config.yaml")
    checkpoint = model.save_pretrained(work / "run" / "model")
    bold = pd.read_csv(SHARED_DATA / "dna" / "bold_insecta_4k.tsv", sep="\t", dtype=str).iloc[:KEYS]
    taxonomy = bold.rename(columns={f"{rank}_name": rank for rank in ALL_RANKS}).reindex(columns=list(ALL_RANKS))
    real = sorted((SHARED_DATA / "images").glob("*.jpg"))
    taxonomy["image_ref"] = [str(real[i % len(real)]) for i in range(len(bold))]
    emb, ids = Embedder(checkpoint, device=device).embed_dna(bold["nucleotides"].tolist(), bold["processid"].tolist())
    thresholds = {m: {"threshold": 0.5} for m in ("image", "dna")}  # nominal: this measures speed only
    index = ReferenceIndex(emb.shape[1], checkpoint_hash=checkpoint_hash(checkpoint),
                           metadata={"modality": "dna", "thresholds": thresholds})
    index.add(emb, ids, taxonomy.astype("string"))
    index.save(work / "index")
    photos = work / "photos"
    photos.mkdir()
    for i in range(PHOTOS):
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
