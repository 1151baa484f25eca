"""The Starlette application of ``clibd serve``: the classify page and its JSON API (when a
model and a library are given) and the run report (when a run folder is given).

Routes: ``GET /`` (page), ``GET /api/health``, ``POST /api/classify`` (multipart: ``photos``
files, ``barcodes`` files, ``fasta`` pasted text; url-encoded ``fasta`` alone; or a text/plain
body of FASTA or bare sequences), ``GET /api/thumbnail/<key id>``, ``GET /run`` and its
pictures. A request body larger than ``Limits.request_bytes`` is refused with 413 before it is
parsed; files are parsed in memory (never spooled to disk) and dropped after the answer.
Every error is JSON ``{"error": sentence}``: 400 a malformed body, 413 too large, 415 another
Content-Type, 404 / 405 unknown routes, 500 a bug (its traceback only in the server's log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clibd.serve.report import RunReport
from clibd.serve.service import Classifier, Limits
from clibd.serve.uploads import PASTED_NAME, Upload

STATIC = Path(__file__).with_name("static")
BODY_KINDS = ("multipart/form-data", "application/x-www-form-urlencoded", "text/plain")


DEFAULT_LIMITS = Limits()


class _TooLarge(Exception):
    pass


def build_app(
    classifier: Optional[Classifier] = None, report: Optional[RunReport] = None, limits: Limits = DEFAULT_LIMITS
) -> Starlette:
    if classifier is None and report is None:
        raise ValueError("clibd serve needs a model and an index, a run folder, or both")

    async def page(request: Request) -> Response:
        if classifier is None:
            return RedirectResponse("/run")
        html = (
            (STATIC / "index.html")
            .read_text()
            .replace("{{RUN_LINK}}", "" if report is None else '<a href="/run">run report</a>')
        )
        return HTMLResponse(html)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **classifier.health()})

    async def classify(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in BODY_KINDS:
            return JSONResponse(
                {
                    "error": f"POST /api/classify takes {', '.join(BODY_KINDS)} (fields photos, barcodes, fasta; "
                    f"text/plain: FASTA or bare sequences), not Content-Type {kind or '(none)'!r}"
                },
                status_code=415,
            )
        try:
            photos, barcodes = await _read_uploads(request, limits, kind)
        except _TooLarge as err:
            return JSONResponse({"error": str(err)}, status_code=413)
        except (MultiPartException, ValueError, KeyError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"malformed {kind} body: {str(err) or type(err).__name__}"}, status_code=400)
        if not photos and not barcodes:
            return JSONResponse(
                {"error": "no photos or barcodes in the request (fields: photos, barcodes, fasta)"}, status_code=400
            )
        try:
            return JSONResponse(await run_in_threadpool(classifier.classify, photos, barcodes, limits))
        except ValueError as err:  # duplicate ids within the photos or within the barcodes
            return JSONResponse({"error": str(err)}, status_code=400)

    async def thumbnail(request: Request) -> Response:
        data = await run_in_threadpool(classifier.thumbnail, request.path_params["key"])
        if data is None:
            return JSONResponse({"error": "no reference specimen with a photo under that id"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    routes = [Route("/", page), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    if classifier is not None:
        routes += [
            Route("/api/health", health),
            Route("/api/classify", classify, methods=["POST"]),
            Route("/api/thumbnail/{key:path}", thumbnail),
        ]
    if report is not None:
        routes += _report_routes(report)
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})


async def _http_error(request: Request, err: HTTPException) -> Response:
    """404, 405, ... as JSON with a sentence, for the page's scripts and for curl alike."""
    return JSONResponse({"error": f"{request.method} {request.url.path}: {err.detail}"}, status_code=err.status_code)


async def _server_error(request: Request, err: Exception) -> Response:
    """A bug: JSON 500 saying so (the traceback goes to the server's log, never to the client)."""
    return JSONResponse({"error": f"internal error while answering {request.url.path}: see the server log"}, 500)


def _report_routes(report: RunReport) -> list[Route]:
    async def run_page(request: Request) -> Response:
        return HTMLResponse(await run_in_threadpool(report.html))

    async def picture(request: Request) -> Response:
        path = report.picture(request.path_params["name"])  # a fixed set of names, else None
        return FileResponse(path) if path else JSONResponse({"error": "no such picture"}, status_code=404)

    async def specimen_photo(request: Request) -> Response:
        data = await run_in_threadpool(report.specimen_photo, request.path_params["row"])
        if data is None:
            return JSONResponse({"error": "no photo for that point"}, status_code=404)
        return Response(data, media_type="image/jpeg")

    return [
        Route("/run", run_page),
        Route("/run/picture/{name}", picture),
        Route("/run/specimen/{row:int}", specimen_photo),
    ]


async def _read_uploads(request: Request, limits: Limits, kind: str) -> tuple[list[Upload], list[Upload]]:
    """The request's files, read into memory under the size limits (413 past them)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.request_bytes:
        raise _TooLarge(f"request of {int(declared):,} bytes exceeds the limit of {limits.request_bytes:,} bytes")
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a body without a length is held to it too
        body += chunk
        if len(body) > limits.request_bytes:
            raise _TooLarge(f"request exceeds the limit of {limits.request_bytes:,} bytes")

    async def replay():
        yield bytes(body)

    if kind == "text/plain":
        return [], [Upload(PASTED_NAME, bytes(body))]
    if kind == "application/x-www-form-urlencoded":
        form = await FormParser(request.headers, replay()).parse()  # pasted text only
    else:
        parser = MultiPartParser(
            request.headers, replay(), max_files=limits.files, max_fields=16, max_part_size=limits.file_bytes
        )
        parser.spool_max_size = limits.request_bytes + 1  # keep every file in memory, never in a temp file
        form = await parser.parse()
    photos, barcodes = [], []
    try:
        for field, value in form.multi_items():
            if isinstance(value, UploadFile):
                upload = Upload(value.filename or field, await value.read())
                (photos if field == "photos" else barcodes).append(upload)
            elif field == "fasta" and value.strip():
                barcodes.append(Upload(PASTED_NAME, value.encode()))
    finally:
        await form.close()
    return photos, barcodes
