"""``clibd serve --checkpoint DIR --index LIB [--run RUN] [--host 127.0.0.1] [--port 8000]
[--keep-flagged] [--min-valid-nt 200 ...] [--rerank identity [--candidates 10] [--margin 0.1]]``.

A local web app: the classify page and its JSON API (``POST /api/classify``,
``GET /api/health``) when a model and a library are given, the run report (``/run``) when
a run folder is given. The model and the library load once, before the server listens.
It binds 127.0.0.1 unless ``--host`` says otherwise (the API has no authentication).
"""

from __future__ import annotations

import argparse
from typing import get_args

from clibd.commands.classify import add_rerank_arguments, rerank_settings
from clibd.commands.embed import add_quality_arguments, quality_rules
from clibd.config import Precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="model directory written by save_pretrained")
    parser.add_argument("--index", help="reference library from `clibd index build` (with --checkpoint)")
    parser.add_argument("--run", help="a run folder (train.py's OUT) to show as a report at /run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--k", type=int, default=5, help="nearest reference specimens that vote and are shown")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=get_args(Precision), default="auto")
    parser.add_argument("--max-file-mb", type=float, default=16, help="largest accepted photo or barcode file")
    parser.add_argument("--max-request-mb", type=float, default=256, help="largest accepted request (one batch)")
    add_quality_arguments(parser, "show the predictions of flagged photos (empty_well, blurry, too_small) anyway")
    add_rerank_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from clibd.serve.app import build_app
    from clibd.serve.report import RunReport
    from clibd.serve.service import Classifier, Limits, MiB

    if (args.checkpoint is None) != (args.index is None):
        raise SystemExit("clibd serve: --checkpoint and --index go together")
    if args.checkpoint is None and args.run is None:
        raise SystemExit("clibd serve: give --checkpoint and --index (classify page), --run (run report), or both")
    if args.k < 1:
        raise SystemExit(f"clibd serve: --k must be at least 1, got {args.k}")
    classifier = None
    if args.checkpoint:
        classifier = Classifier(
            args.checkpoint,
            args.index,
            args.k,
            args.device,
            args.batch_size,
            args.precision,
            quality_rules(args),
            args.keep_flagged,
            rerank=lambda species: rerank_settings(args, species),
        )
        print(
            f"loaded {args.checkpoint} and {args.index} ({len(classifier.library)} keys) "
            f"in {classifier.load_seconds:.1f} s"
        )
    report = RunReport(args.run) if args.run else None
    limits = Limits(file_bytes=int(args.max_file_mb * MiB), request_bytes=int(args.max_request_mb * MiB))
    app = build_app(classifier, report, limits)
    print(f"clibd serve: http://{args.host}:{args.port}/" + ("" if classifier else "run"))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
