"""`clibd serve`'s JSON API, in process (Starlette's TestClient): real photos and real BOLD
barcodes classified against a library built from a tiny model, checked against what
`clibd classify` writes for the same files; bad files, size limits, thumbnails."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from clibd.cli import main
from tests.data_paths import BOLD_4K, REAL_IMAGES, needs_shared_data

pytestmark = needs_shared_data

K = 3


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    from tests.helpers.real_table import real_library

    folder = tmp_path_factory.mktemp("serve")
    return real_library(folder)


@pytest.fixture(scope="module")
def classifier(library):
    from clibd.serve.service import Classifier

    checkpoint, index = library
    return Classifier(checkpoint, index, k=K, device="cpu")


def _client(classifier, **limits):
    from starlette.testclient import TestClient

    from clibd.serve.app import build_app
    from clibd.serve.service import Limits

    return TestClient(build_app(classifier, limits=Limits(**limits)))


@pytest.fixture(scope="module")
def client(classifier):
    return _client(classifier)


def _photos(n: int, kind: str = "valid") -> list[Path]:
    """Real photos: ``valid`` ones pass the quality checks, ``blurry`` / ``empty`` ones are flagged."""
    return sorted(REAL_IMAGES.glob(f"{kind}_*.jpg"))[:n]


def _cli_csv(library, tmp_path: Path, folder: Path, *inputs: str) -> pd.DataFrame:
    """`clibd classify` run in the inputs' ``folder`` on their bare names: its file columns then name
    the files as the server knows them (an upload has a name, never a path)."""
    checkpoint, index = library
    out = tmp_path / "cli.csv"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert (
            main(
                [
                    "classify",
                    "--checkpoint",
                    str(checkpoint),
                    "--index",
                    str(index),
                    *inputs,
                    "--k",
                    str(K),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    return pd.read_csv(out)


def test_health_names_model_index_and_hash(client, library) -> None:
    from clibd.embed.run_dir import checkpoint_hash

    checkpoint, index = library
    health = client.get("/api/health").json()
    assert health["model"] == str(checkpoint) and health["index"] == str(index)
    assert health["checkpoint_hash"] == health["index_checkpoint_hash"] == checkpoint_hash(checkpoint)
    assert (health["keys"], health["keys_with_photo"], health["k"], health["dim"]) == (30, 30, K, 16)
    meta = json.loads((index / "meta.json").read_text())["metadata"]
    assert health["thresholds"] == {m: t["threshold"] for m, t in meta["thresholds"].items()}


def test_one_real_photo_matches_the_cli(client, library, tmp_path) -> None:
    photo = _photos(1)[0]
    answer = client.post("/api/classify", files=[("photos", (photo.name, photo.read_bytes(), "image/jpeg"))])
    assert answer.status_code == 200
    body = answer.json()
    served = pd.read_csv(io.StringIO(body["csv"]))
    expected = _cli_csv(library, tmp_path, photo.parent, "--images", photo.name)
    pd.testing.assert_frame_equal(served, expected)
    [specimen] = body["specimens"]
    assert specimen["id"] == photo.stem and specimen["photo"] == photo.name
    [result] = specimen["results"]
    assert (result["evidence"], result["quality"], result["files"]["image_file"]) == ("image", "", photo.name)
    threshold = json.loads((library[1] / "meta.json").read_text())["metadata"]["thresholds"]["image"]["threshold"]
    assert result["threshold"] == threshold
    row = expected.iloc[0]
    for column in ("species", "deepest_confident_rank"):  # the CLI's answer, NaN as null
        assert result["prediction"][column] == (None if pd.isna(row[column]) else row[column])
    assert result["prediction"]["species_vote_share"] == pytest.approx(row["species_vote_share"], abs=1e-4)
    assert result["prediction"]["possible_new_species"] == bool(row["possible_new_species"])
    neighbours = result["neighbours"]
    assert len(neighbours) == K and neighbours[0]["id"] == row["nearest_id"]
    assert neighbours[0]["similarity"] == pytest.approx(row["best_similarity"], abs=1e-4)
    assert [n["similarity"] for n in neighbours] == sorted((n["similarity"] for n in neighbours), reverse=True)
    keys = pd.read_parquet(library[1] / "keys.parquet").set_index("id")
    for n in neighbours:  # each neighbour's taxonomy is its key's, and its thumbnail a small JPEG of its photo
        assert n["species"] == keys.loc[n["id"], "species"]
        thumb = client.get(n["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        from PIL import Image

        assert max(Image.open(io.BytesIO(thumb.content)).size) == 128


def test_real_barcodes_fasta_matches_the_cli(client, library, tmp_path) -> None:
    records = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[200:212]
    fasta = "".join(f">{p}\n{s}\n" for p, s in zip(records["processid"], records["nucleotides"]))
    path = tmp_path / "new.fasta"
    path.write_text(fasta)
    body = client.post("/api/classify", files=[("barcodes", ("new.fasta", fasta.encode(), "text/plain"))]).json()
    expected = _cli_csv(library, tmp_path, tmp_path, "--dna", path.name)
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(body["csv"])), expected)
    assert [s["id"] for s in body["specimens"]] == records["processid"].tolist()
    for specimen in body["specimens"]:
        [result] = specimen["results"]
        assert result["evidence"] == "dna" and len(result["neighbours"]) == K
    pasted = pd.read_csv(io.StringIO(client.post("/api/classify", data={"fasta": fasta}).json()["csv"]))
    assert (pasted["dna_file"] == "pasted.fasta").all()  # the page's text box: same rows, its own name
    pd.testing.assert_frame_equal(pasted.assign(dna_file="new.fasta"), expected)


def test_photo_and_barcode_of_one_specimen_are_one_fused_row(client, library, tmp_path) -> None:
    photo = _photos(2)[1]
    record = pd.read_csv(BOLD_4K, sep="\t", dtype=str).iloc[300]
    fasta = f">{photo.stem}\n{record['nucleotides']}\n>other\n{record['nucleotides']}\n"
    (tmp_path / "b.fa").write_text(fasta)
    (tmp_path / photo.name).write_bytes(photo.read_bytes())
    body = client.post(
        "/api/classify",
        files=[
            ("photos", (photo.name, photo.read_bytes(), "image/jpeg")),
            ("barcodes", ("b.fa", fasta.encode(), "text/plain")),
        ],
    ).json()
    expected = _cli_csv(library, tmp_path, tmp_path, "--images", photo.name, "--dna", "b.fa")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(body["csv"])), expected)
    assert expected["evidence"].tolist() == ["image+dna", "dna"]
    assert [(s["id"], [r["evidence"] for r in s["results"]]) for s in body["specimens"]] == [
        (photo.stem, ["image+dna"]),
        ("other", ["dna"]),
    ]
    fused = body["specimens"][0]["results"][0]
    thresholds = json.loads((library[1] / "meta.json").read_text())["metadata"]["thresholds"]
    assert fused["threshold"] == thresholds["image+dna"]["threshold"]  # calibrated for fused queries
    assert fused["files"] == {"image_file": photo.name, "dna_file": "b.fa", "dna_record": 1}
    assert fused["neighbours"][0]["similarity"] == pytest.approx(expected["best_similarity"].iloc[0], abs=1e-4)


def test_flagged_photo_is_withheld_unless_kept(client, classifier, library, tmp_path) -> None:
    from clibd.serve.service import Classifier, Limits
    from clibd.serve.uploads import Upload

    photo = _photos(1, "blurry")[0]
    body = client.post("/api/classify", files=[("photos", (photo.name, photo.read_bytes(), "image/jpeg"))]).json()
    served = pd.read_csv(io.StringIO(body["csv"]))
    pd.testing.assert_frame_equal(served, _cli_csv(library, tmp_path, photo.parent, "--images", photo.name))
    [result] = body["specimens"][0]["results"]
    assert (result["evidence"], result["threshold"], result["neighbours"]) == ("", None, [])
    assert result["quality"] == served["quality"].iloc[0] != "" and result["prediction"]["species"] is None
    assert body["counts"]["withheld"] == 1
    keeping = Classifier(library[0], library[1], k=K, device="cpu", keep_flagged=True)
    kept = keeping.classify([Upload(photo.name, photo.read_bytes())], [], Limits())
    expected = _cli_csv(library, tmp_path, photo.parent, "--images", photo.name, "--keep-flagged")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(kept["csv"])), expected)
    [result] = kept["specimens"][0]["results"]
    assert result["evidence"] == "image" and result["quality"] == expected["quality"].iloc[0] != ""
    assert [n["id"] for n in result["neighbours"]][0] == expected["nearest_id"].iloc[0]


def test_mixed_batch_bad_files_get_their_own_rows(client) -> None:
    good = _photos(3)
    truncated = good[0].read_bytes()[:2000]
    files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in good]
    files += [
        ("photos", ("notes.jpg", b"these are not pixels", "image/jpeg")),
        ("photos", ("cut.jpg", truncated, "image/jpeg")),
        ("barcodes", ("empty.fasta", b">lonely\n\n>also_empty\nNNNN--\n", "text/plain")),
        ("barcodes", ("words.fasta", b"no header here\nACGT\n", "text/plain")),
    ]
    answer = client.post("/api/classify", files=files)
    assert answer.status_code == 200
    body = answer.json()
    ids = [p.stem for p in good] + ["notes", "cut", "lonely", "also_empty", "words.fasta"]
    assert [s["id"] for s in body["specimens"]] == ids  # every input has its row, in upload order
    by_id = {s["id"]: s["results"][0] for s in body["specimens"]}
    assert all((by_id[p.stem]["evidence"], by_id[p.stem]["quality"]) == ("image", "") for p in good)
    assert by_id["notes"]["quality"] == "image: unreadable (not an image file, or a format PIL cannot open (20 bytes))"
    assert by_id["cut"]["quality"] == (
        "image: unreadable (truncated image file (2,000 bytes): it was cut short when copied or saved)"
    )
    assert by_id["cut"]["files"] == {"image_file": "cut.jpg", "dna_file": None, "dna_record": None}
    for sid, record in (("lonely", 1), ("also_empty", 2)):  # as `clibd classify`: a row, never a prediction
        result = by_id[sid]
        assert (result["evidence"], result["quality"]) == ("", "dna: too_short (0 valid nt < 200)")
        assert result["files"] == {"image_file": None, "dna_file": "empty.fasta", "dna_record": record}
        assert result["neighbours"] == []
    words = by_id["words.fasta"]
    assert words["quality"] == "dna: unreadable (line 1: expected a '>' header line, found 'no header here\\nACGT')"
    assert words["files"] == {"image_file": None, "dna_file": "words.fasta", "dna_record": None}
    assert body["counts"] == {"photos": 5, "barcodes": 3, "rows": 8, "withheld": 5, "errors": 3}
    table = pd.read_csv(io.StringIO(body["csv"]))
    assert table["id"].tolist() == ids  # the CSV has the same rows
    assert table["evidence"].fillna("").tolist() == ["image"] * 3 + [""] * 5
    assert table["quality"].fillna("").tolist() == [by_id[i]["quality"] for i in ids]


def test_duplicate_ids_are_refused_by_name(client) -> None:
    answer = client.post("/api/classify", data={"fasta": ">twice\nACGT\n>twice\nACGT\n"})
    assert answer.status_code == 400 and "'twice' (pasted.fasta:1, pasted.fasta:2)" in answer.json()["error"]


def test_oversized_upload_and_request(classifier) -> None:
    small, large = _photos(2)
    limit = (len(small.read_bytes()) + len(large.read_bytes())) // 2
    small, large = sorted((small, large), key=lambda p: len(p.read_bytes()))
    client = _client(classifier, file_bytes=limit, request_bytes=10 * limit)
    files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in (small, large)]
    body = client.post("/api/classify", files=files).json()
    big = next(s for s in body["specimens"] if s["id"] == large.stem)["results"][0]
    assert big["quality"] == (
        f"unreadable ({len(large.read_bytes()):,} bytes exceeds the per-file limit of {limit:,} bytes)"
    )
    table = pd.read_csv(io.StringIO(body["csv"]))
    assert table["id"].tolist() == [small.stem, large.stem] and table["evidence"].isna().tolist() == [False, True]
    too_big = client.post("/api/classify", files=[("photos", ("x.jpg", b"\xff" * (10 * limit + 1), "image/jpeg"))])
    assert too_big.status_code == 413 and "exceeds the limit" in too_big.json()["error"]

    def chunks():  # no Content-Length: the limit still holds while the body streams in
        for _ in range(11):
            yield b"\xff" * limit

    streamed = client.post(
        "/api/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert streamed.status_code == 413


def test_thumbnails_only_for_keys_of_the_index(client, library) -> None:
    keys = pd.read_parquet(library[1] / "keys.parquet")
    assert client.get(f"/api/thumbnail/{keys['id'].iloc[0]}").status_code == 200
    photo = str(_photos(1)[0])
    for attempt in (
        photo,
        photo.lstrip("/"),
        "../../../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        keys["image_ref"].iloc[0],
        "%2Fetc%2Fpasswd",
    ):
        answer = client.get(f"/api/thumbnail/{attempt}")
        assert answer.status_code == 404 and not answer.headers["content-type"].startswith("image/"), attempt
    # a path that reaches the handler is looked up as a key id, and is none
    assert client.get(f"/api/thumbnail/{photo.lstrip('/')}").json()["error"].startswith("no reference specimen")


def test_no_upload_is_left_on_disk(client, tmp_path, monkeypatch) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    opened = []  # a spooled upload past its memory size rolls over into tempfile.TemporaryFile
    real = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **kw: opened.append(a) or real(*a, **kw))
    files = [("photos", (p.name, p.read_bytes() * 30, "image/jpeg")) for p in _photos(2)]  # > 1 MiB each
    assert client.post("/api/classify", files=files).status_code == 200
    assert opened == [] and list(private.iterdir()) == []


def test_empty_request_is_refused(client) -> None:
    answer = client.post("/api/classify", data={"fasta": "   "})
    assert answer.status_code == 400 and "no photos or barcodes" in answer.json()["error"]


def test_serve_command_binds_loopback_and_loads_once(library, monkeypatch) -> None:
    import uvicorn
    from starlette.testclient import TestClient

    import clibd.serve.service as service

    checkpoint, index = library
    started, loads = {}, []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    real_init = service.Classifier.__init__
    monkeypatch.setattr(
        service.Classifier, "__init__", lambda self, *a, **kw: (loads.append(a), real_init(self, *a, **kw))[1]
    )
    assert main(["serve", "--checkpoint", str(checkpoint), "--index", str(index), "--port", "8123"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    client = TestClient(started["app"])
    photo = _photos(1)[0]
    for _ in range(2):
        answer = client.post("/api/classify", files=[("photos", (photo.name, photo.read_bytes(), "image/jpeg"))])
        assert answer.is_success
    assert len(loads) == 1  # the model and library load at start-up, not per request
    assert client.get("/run").status_code == 404  # no --run: no report


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "m"], "--checkpoint and --index go together"),
        ([], "give --checkpoint and --index"),
        (["--run", "/nonexistent/run"], "run folder not found: /nonexistent/run"),
    ],
)
def test_serve_command_refuses_incomplete_arguments(argv, message, monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    try:
        returned = main(["serve", *argv])
    except SystemExit as err:  # a command-line mistake
        assert message in str(err)
    else:  # a missing folder: one line on stderr and exit 1 (clibd.cli), no traceback
        assert returned == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "request_, status, message",
    [
        ({"content": b"abc"}, 415, "not Content-Type '(none)'"),
        (
            {"content": b"{}", "headers": {"content-type": "application/json"}},
            415,
            "not Content-Type 'application/json'",
        ),
        ({"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 400, "malformed multipart/form-data"),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, ""),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_json_sentence(client, request_, status, message) -> None:
    answer = client.post("/api/classify", **request_)
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]


def test_unknown_routes_and_methods_answer_json(client) -> None:
    for answer, status in ((client.get("/api/nothing"), 404), (client.get("/api/classify"), 405)):
        assert answer.status_code == status and answer.json()["error"].startswith("GET /api/")


def test_bare_sequences_can_be_pasted(client) -> None:
    seqs = pd.read_csv(BOLD_4K, sep="\t", dtype=str)["nucleotides"].iloc[:3].tolist()
    one_per_line = client.post("/api/classify", content="\n".join(seqs), headers={"content-type": "text/plain"})
    assert [s["id"] for s in one_per_line.json()["specimens"]] == ["pasted-1", "pasted-2", "pasted-3"]
    wrapped = "\n".join(seqs[0][i : i + 60] for i in range(0, len(seqs[0]), 60))  # one barcode, wrapped
    body = client.post("/api/classify", data={"fasta": wrapped + "\n\n" + seqs[1]}).json()
    rows = pd.read_csv(io.StringIO(body["csv"]))
    assert rows["id"].tolist() == ["pasted-1", "pasted-2"] and (rows["evidence"] == "dna").all()
    same = client.post("/api/classify", data={"fasta": f">pasted-1\n{seqs[0]}\n>pasted-2\n{seqs[1]}\n"}).json()
    pd.testing.assert_frame_equal(rows, pd.read_csv(io.StringIO(same["csv"])))  # as if it had headers


def test_health_gives_the_provenance_and_whether_the_model_is_the_synthetic_demos(client, tmp_path) -> None:
    from clibd.config import Config, save_config
    from clibd.serve.service import provenance

    health = client.get("/api/health").json()
    assert health["library"]["dataset"].startswith("tabular:") and health["library"]["key_splits"]
    assert health["trained_on"].startswith("tabular:") and health["synthetic_demo"] is False
    cfg = Config()
    cfg.data.demo_specimens = 4000  # a run the demo generator fed
    save_config(cfg, tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "model").mkdir()
    assert provenance(tmp_path / "run" / "model", {})["synthetic_demo"] is True
