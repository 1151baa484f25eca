"""The run report of `clibd serve` and the page in a real browser, on a small run trained on
real data (tests/helpers/served_run.py): `clibd eval` writes the embedding map, the report
shows results, map and curves, and headless Chromium (Debian's, driven by Playwright) drops a
photo and a FASTA on the classify page and sees the predictions and neighbours the API gives,
and renders the summary table of 5,000 barcodes in under 2 s. Screenshots go to a temporary
folder, or to ``$CLIBD_SCREENSHOTS`` (``CLIBD_SCREENSHOTS=docs/images`` refreshes the README's)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clibd.eval.embedding_map import embedding_map
from clibd.serve.report import markdown_tables
from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data

REPO = Path(__file__).resolve().parents[1]
RENDER_BAR_MS = 2000  # 5,000 specimens on screen after the answer arrives (issue 22)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CLIBD_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_embedding_map_points_per_modality() -> None:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "processid": [f"p{i}" for i in range(12)],
            "order": ["A"] * 6 + ["B"] * 6,
            "family": "f",
            "genus": "g",
            "species": "s",
            "image_ref": [f"/x/{i}.jpg" for i in range(12)],
        }
    )
    emb = np.concatenate([rng.normal(5, 0.1, (6, 8)), rng.normal(-5, 0.1, (6, 8))]).astype(np.float32)
    queries = {
        "seen": {"image": (emb[:8], rows[:8]), "dna": (emb[:3], rows[:3])},
        "unseen": {"image": (emb[8:], rows[8:])},
    }
    points = embedding_map(queries)
    assert points["modality"].tolist() == ["image"] * 12  # 3 dna points: too few for UMAP, left out
    assert points["id"].tolist() == rows["processid"].tolist()
    assert points["role"].tolist() == ["seen"] * 8 + ["unseen"] * 4
    assert points["image_ref"].tolist() == rows["image_ref"].tolist()
    a, b = points[["x", "y"]].to_numpy()[:6], points[["x", "y"]].to_numpy()[6:]
    gap = np.linalg.norm(a.mean(0) - b.mean(0))
    assert gap > 3 * max(a.std(0).max(), b.std(0).max())  # the two orders land apart


def test_markdown_tables_escape_every_cell() -> None:
    html = markdown_tables("# t\n\n## Macro <b>\n\n| a | <script>x</script> |\n|---|---|\n| 1 | 2 & 3 |\n")
    assert html == (
        "<h3>Macro &lt;b&gt;</h3><table><thead><tr><th>a</th><th>&lt;script&gt;x&lt;/script&gt;</th></tr>"
        "</thead><tbody><tr><td>1</td><td>2 &amp; 3</td></tr></tbody></table>"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not REAL_IMAGES.is_dir():
        pytest.skip(f"real data folder {REAL_IMAGES} is absent")
    from tests.helpers.served_run import served_run

    return served_run(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def classifier(run):
    from clibd.serve.service import Classifier

    return Classifier(run.checkpoint, run.index, k=3, device="cpu")


@needs_shared_data
@pytest.mark.slow
def test_eval_writes_the_embedding_map(run) -> None:
    evaluation = run.run / "eval-test"
    points = pd.read_csv(evaluation / "embeddings_map.csv")
    results = json.loads((evaluation / "results.json").read_text())
    queries = results["meta"]["counts"]["queries"]
    assert (evaluation / "embeddings.png").stat().st_size > 10_000
    for modality in ("image", "dna"):  # every seen and unseen test query of each specimen tower, once
        mine = points[points["modality"] == modality]
        assert len(mine) == queries["seen"][modality] + queries["unseen"][modality] == 15 and mine["id"].is_unique
        assert mine["role"].value_counts().to_dict() == {"seen": 10, "unseen": 5}


@needs_shared_data
@pytest.mark.slow
def test_run_report_page(run) -> None:
    from starlette.testclient import TestClient

    from clibd.serve.app import build_app
    from clibd.serve.report import RunReport

    client = TestClient(build_app(report=RunReport(run.run)))
    assert client.get("/", follow_redirects=False).headers["location"] == "/run"
    page = client.get("/run").text
    assert "<th>query-&gt;key</th>" in page and "<td>dna-&gt;dna</td>" in page
    assert page.count("<circle cx=") >= 30 and page.count("data-row=") == 30
    first = pd.read_csv(run.run / "eval-test" / "embeddings_map.csv").iloc[0]
    assert f"<title>{first['id']} | {first['order']} &gt; {first['family']}" in page
    steps = [json.loads(line)["step"] for line in (run.run / "train_log.jsonl").read_text().splitlines()]
    assert page.count("<polyline") >= 4 and f"step {steps[0]}" in page and f">{steps[-1]}</text>" in page
    assert client.get("/run/picture/accuracy.png").headers["content-type"] == "image/png"
    assert client.get("/run/picture/embeddings.png").status_code == 200
    assert client.get("/run/picture/results.json").status_code == 404  # only the two pictures, by name
    photo = client.get("/run/specimen/0")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert client.get("/run/specimen/30").status_code == 404


# ---- a real browser --------------------------------------------------------------------


def _chromium() -> str:
    """Debian's Chromium and Playwright's Python package, or a skip saying which is missing."""
    executable = os.environ.get("CLIBD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium executable (apt-get install chromium; or set CLIBD_CHROMIUM): browser test skipped")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is not installed: browser test skipped")
    return executable


@pytest.fixture(scope="module")
def server(run, classifier):
    """The real app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    from clibd.serve.app import build_app
    from clibd.serve.report import RunReport

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(build_app(classifier, RunReport(run.run)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


DROP = """(files) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, { type: f.type }));
  }
  const drop = new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
  document.getElementById("drop").dispatchEvent(drop);
}"""


def _browser(p, executable: str):
    return p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])


def _classify_on_page(page, timeout: int = 120_000) -> None:
    page.click("#go")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=timeout)


def _open_card(page, sid: str):
    page.locator(f'#table tbody tr[data-specimen="{sid}"]').click()
    return page.locator(f'#results [data-specimen="{sid}"]')


@needs_shared_data
@pytest.mark.slow
def test_browser_drops_a_photo_and_a_fasta(server, classifier, screenshots) -> None:
    from playwright.sync_api import sync_playwright

    from clibd.serve.service import Limits
    from clibd.serve.uploads import Upload

    executable = _chromium()
    photo = sorted(REAL_IMAGES.glob("*.jpg"))[5]
    records = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[400:402]
    fasta = "".join(f">{p}\n{s}\n" for p, s in zip([photo.stem, records["processid"].iloc[1]], records["nucleotides"]))
    expected = classifier.classify(
        [Upload(photo.name, photo.read_bytes())], [Upload("b.fasta", fasta.encode())], Limits()
    )
    files = [
        {"name": photo.name, "type": "image/jpeg", "b64": base64.b64encode(photo.read_bytes()).decode()},
        {"name": "barcodes.fasta", "type": "", "b64": base64.b64encode(fasta.encode()).decode()},
    ]
    with sync_playwright() as p:
        browser = _browser(p, executable)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('keys')")
        provenance = page.inner_text("#provenance")  # where the answers come from, in plain view
        assert (
            "Reference library: 30 dna keys from tabular:" in provenance and "model trained on tabular:" in provenance
        )
        assert page.locator("#synthetic").is_hidden()  # real barcodes: no synthetic-demo warning
        page.evaluate(DROP, files)
        assert "1 photo(s)" in page.inner_text("#queued") and "barcodes.fasta" in page.inner_text("#queued")
        _classify_on_page(page, 60_000)
        # the photo (flagged: an empty well) and its barcode are one row, predicted from the barcode
        assert page.inner_text("#status").startswith("done: 2 specimens (0 withheld), 0 unreadable")
        ids = page.locator("#table tbody tr td:first-child").all_inner_texts()
        assert ids == [s["id"] for s in expected["specimens"]]
        for specimen in expected["specimens"]:
            card = _open_card(page, specimen["id"])
            for result, box in zip(specimen["results"], card.locator(".result").all(), strict=True):
                names = box.locator("td.name").all_inner_texts()
                p = result["prediction"]
                # a name withheld below the deepest confident rank (the vote had one) reads "uncertain"
                assert names == [
                    p[r] or ("unknown" if p[f"{r}_vote_share"] is None else "uncertain")
                    for r in ("order", "family", "genus", "species")
                ]
                deepest = p["deepest_confident_rank"]
                assert (
                    box.locator(".deepest")
                    .inner_text()
                    .startswith(
                        f"Sure down to {deepest}"
                        if deepest
                        else ("The library is not calibrated", "Not sure")[
                            0 if p["possible_new_species"] is None else 1
                        ]
                    )
                )
                shown = [c.locator("b").inner_text() for c in box.locator(".neighbour").all()]
                assert shown == [n["id"] for n in result["neighbours"]]
                assert f"threshold {result['threshold']:.4f}" in box.locator(".flag").inner_text()
                assert box.locator(".evidence").inner_text() == f"evidence: {result['evidence']}"
                assert box.locator(".quality").inner_text() == f"quality: {result['quality'] or 'passed'}"
            thumbnails = "Array.from(document.querySelectorAll('.neighbour img'))"
            page.wait_for_function(f"{thumbnails}.every(i => i.complete)")
            widths = page.evaluate(f"{thumbnails}.map(i => i.naturalWidth)")
            assert len(widths) == 3 and min(widths) > 0  # every neighbour's thumbnail arrived and decoded
        assert [r["quality"] for s in expected["specimens"] for r in s["results"]] == ["image: empty_well", ""]
        assert _open_card(page, photo.stem).locator("img.query-photo").count() == 1
        assert page.get_attribute("#csv", "href").startswith("blob:")
        page.screenshot(path=str(screenshots / "serve_classify.png"), full_page=True)

        # A batch bigger than one chunk: progress, every photo once, and the CSV of all of them.
        page.click("#clear")
        real = sorted(REAL_IMAGES.glob("*.jpg"))
        batch = [
            {
                "name": f"{i:02d}_{real[i % len(real)].name}",
                "type": "image/jpeg",
                "b64": base64.b64encode(real[i % len(real)].read_bytes()).decode(),
            }
            for i in range(60)
        ]
        page.evaluate(DROP, batch)
        _classify_on_page(page)
        # the 8 flagged photos of the 40 come round twice: their rows say why, without a prediction
        assert page.inner_text("#status").startswith("done: 60 specimens (16 withheld), 0 unreadable")
        assert page.evaluate("document.getElementById('progress').value") == 60
        rows = page.locator("#table tbody tr td:first-child").all_inner_texts()
        assert rows == [Path(f["name"]).stem for f in batch]
        page.select_option("#filter", "failed")
        assert page.locator("#table tbody tr").count() == 16 and page.inner_text("#shown") == "16 of 60 specimens"
        csv = page.evaluate("fetch(document.getElementById('csv').href).then((r) => r.text())")
        lines = csv.strip().split("\n")
        assert lines[0].startswith("id,image_file,dna_file,dna_record,evidence,quality,strand,order,order_similarity")
        assert [line.split(",")[0] for line in lines[1:]] == rows

        # Bare sequences pasted, one per line, as BOLD takes them.
        page.click("#clear")
        page.fill("#fasta", "\n".join(records["nucleotides"]))
        _classify_on_page(page)
        assert page.locator("#table tbody tr td:first-child").all_inner_texts() == ["pasted-1", "pasted-2"]

        page.goto(server + "/run")
        page.locator("svg.map circle[data-row]").first.click()
        page.wait_for_function("() => { const i = document.querySelector('#specimen img'); return i && i.complete; }")
        assert page.evaluate("document.querySelector('#specimen img').naturalWidth") > 0
        page.screenshot(path=str(screenshots / "serve_run_report.png"), full_page=True)
        browser.close()


def five_thousand_barcodes() -> str:
    """5,000 real BOLD barcodes: the 4,278 of the file, then copies with 1% of their bases changed."""
    bold = pd.read_csv(BOLD_4K, sep="\t", dtype=str)
    rng = np.random.default_rng(0)
    ids, seqs = bold["processid"].tolist(), bold["nucleotides"].tolist()
    for i in range(5000 - len(ids)):
        seq = np.array(list(seqs[i]))
        at = rng.choice(len(seq), size=max(1, len(seq) // 100), replace=False)
        seq[at] = rng.choice(list("ACGT"), size=len(at))
        ids.append(f"{ids[i]}-m{i}")
        seqs.append("".join(seq))
    return "".join(f">{i}\n{s}\n" for i, s in zip(ids, seqs))


@needs_shared_data
@pytest.mark.slow
def test_browser_summary_table_of_5000_specimens(server, classifier, screenshots) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    fasta = five_thousand_barcodes()
    files = [{"name": "5000.fasta", "type": "", "b64": base64.b64encode(fasta.encode()).decode()}]
    with sync_playwright() as p:
        browser = _browser(p, executable)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('keys')")
        page.evaluate(DROP, files)
        _classify_on_page(page, 300_000)
        page.wait_for_function("window.clibdTiming.rendered > 0")
        timing = page.evaluate("window.clibdTiming")
        render_ms = timing["rendered"] - timing["answered"]
        print(f"5,000 specimens: summary table rendered {render_ms:.0f} ms after the answer arrived")
        assert render_ms < RENDER_BAR_MS
        assert page.inner_text("#status").startswith("done: 5000 specimens")
        assert page.inner_text("#shown") == "5000 of 5000 specimens" and page.inner_text("#page") == "page 1 of 50"
        assert page.locator("#table tbody tr").count() == 100  # one page in the DOM, not 5,000 cards
        page.screenshot(path=str(screenshots / "serve_summary_5000.png"), full_page=True)
        csv = pd.read_csv(
            io.StringIO(page.evaluate("fetch(document.getElementById('csv').href).then((r) => r.text())"))
        )
        assert len(csv) == 5000
        flagged = int(csv["possible_new_species"].fillna(False).astype(bool).sum())
        page.select_option("#filter", "new")
        assert page.inner_text("#shown") == f"{flagged} of 5000 specimens"
        page.select_option("#filter", "all")
        page.click('#table th[data-key="similarity"]')
        page.click('#table th[data-key="similarity"]')  # descending
        top = page.locator("#table tbody tr").first
        assert float(top.locator("td").nth(5).inner_text()) == pytest.approx(csv["best_similarity"].max(), abs=1e-4)
        sid = top.locator("td").first.inner_text()
        card = _open_card(page, sid)
        nearest = csv.set_index("id").loc[sid, "nearest_id"]
        assert card.locator(".neighbour b").first.inner_text() == nearest
        browser.close()
