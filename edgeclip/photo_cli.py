"""The `edgeclip index` and `edgeclip search` subcommands: a thin command-line layer over `PhotoIndex`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from edgeclip.errors import BundleError, InputError

SHOWN = 20  # paths listed per category in the human-readable output (--json lists them all)


def default_db() -> Path:
    """$EDGECLIP_DB, else $XDG_DATA_HOME/edgeclip/photos.db (~/.local/share/edgeclip/photos.db)."""
    if os.environ.get("EDGECLIP_DB"):
        return Path(os.environ["EDGECLIP_DB"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data).expanduser() / "edgeclip" / "photos.db"


def add_parsers(sub: Any, common: Callable[[], argparse.ArgumentParser]) -> None:
    """Register `index` and `search` on the subparsers of the edgeclip command."""
    db_help = "the index file (default: $EDGECLIP_DB or ~/.local/share/edgeclip/photos.db)"
    p = sub.add_parser("index", parents=[common()], help="build or update a search index of the images under folders",
                       description="Embed new and changed images under PATHs into the index, drop deleted ones; "
                                   "unchanged files are not read again. Broken files are skipped and listed by --report.")
    p.add_argument("bundle", nargs="?", metavar="BUNDLE", help="the bundle that embeds the images")
    p.add_argument("paths", nargs="*", metavar="PATH", help="folders (recursive) or image files")
    p.add_argument("--db", type=Path, default=None, metavar="FILE", help=db_help)
    p.add_argument("--rebuild", action="store_true", help="empty an index built with another bundle and re-embed")
    p.add_argument("--report", action="store_true", help="list the files that could not be embedded")
    p.add_argument("--import", dest="import_dir", type=Path, metavar="PARQUET_DIR",
                   help="merge embeddings written by `python -m edgeclip.distributed` (same bundle required)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch and commit (default 32)")

    p = sub.add_parser("search", parents=[common()], help="find indexed images by a text, an image, or both")
    p.add_argument("query", nargs="?", metavar="QUERY", help="what to look for, in words")
    p.add_argument("--image", metavar="PATH", help="find images similar to this one (with QUERY: a mix of both)")
    p.add_argument("--weight", type=float, default=0.5, metavar="W",
                   help="with QUERY and --image: the text's share of the query, 0..1 (default 0.5)")
    p.add_argument("--top-k", type=int, default=10, metavar="N", help="results to show (default 10)")
    p.add_argument("--db", type=Path, default=None, metavar="FILE", help=db_help)
    p.add_argument("--bundle", metavar="DIR", help="the bundle to embed the query (default: the one that built the index)")


EncoderFactory = Callable[..., Any]  # (args, bundle, **Encoder options) -> Encoder with the global options


def cmd_index(args: argparse.Namespace, make_encoder: EncoderFactory) -> dict:
    """Update, import into and/or report on an index; the result as JSON-ready data."""
    from tqdm import tqdm

    from edgeclip.index import PhotoIndex

    if args.bundle and not args.paths:
        raise InputError("index needs BUNDLE and at least one PATH (a folder or image file)")
    if not (args.bundle or args.import_dir or args.report):
        raise InputError("nothing to do: give BUNDLE PATH..., --import PARQUET_DIR or --report")
    if args.rebuild and not args.bundle:
        raise InputError("--rebuild needs BUNDLE PATH...: the index is rebuilt with that bundle")
    db = args.db or default_db()
    if not args.bundle and not args.import_dir and not db.exists():
        raise InputError(f"no index at {db}; build one with `edgeclip index BUNDLE PATH... --db {db}`")
    # the bundle is loaded now (its identity is checked against the index); the image tower opens on first use,
    # so a run over an unchanged folder costs a scan and no model load
    encoder = make_encoder(args, args.bundle) if args.bundle else None
    result: dict = {"db": str(db)}
    with PhotoIndex(db, encoder, rebuild=args.rebuild, batch_size=args.batch_size) as index:
        if args.import_dir:
            from edgeclip.distributed import read_embeddings

            identity, rows = read_embeddings(args.import_dir)
            result["import"] = dict(index.import_rows(rows, identity), source=str(args.import_dir))
        if args.bundle:
            bar = tqdm(total=0, unit="img", desc="indexing", file=sys.stderr, disable=None, smoothing=0.1)
            with bar:
                report = index.update(args.paths, progress=bar.update, on_total=bar.reset)
            result["update"] = report.summary()
            result["model_id"] = encoder.bundle.model_id
        if args.report:
            result["failures"] = index.failures()
        result["index"] = index.info()
    return result


def _listed(title: str, items: list, fmt: Callable[[Any], str] = str) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):")
    for item in items[:SHOWN]:
        print(f"  {fmt(item)}")
    if len(items) > SHOWN:
        print(f"  ... and {len(items) - SHOWN} more (--json lists all)")


def print_index(result: dict) -> None:
    if "import" in result:
        imp = result["import"]
        print(f"imported {imp['imported']} embeddings and {imp['failed']} error rows from {imp['source']}")
    if "update" in result:
        u = result["update"]
        print(f"{u['scanned']} image files: {len(u['added'])} added, {len(u['changed'])} changed, "
              f"{len(u['deleted'])} deleted, {len(u['failed'])} failed, {u['unchanged']} unchanged, "
              f"{u['still_broken']} known broken skipped; {u['embedded']} embedded in {u['seconds']:.1f} s "
              f"({u['images_per_second']:.1f} images/s)")
        _listed("deleted from the index", u["deleted"])
        _listed("could not be embedded", u["failed"], lambda f: f"{f['path']}: {f['error']}")
    if "failures" in result:
        if result["failures"]:
            _listed("broken files (skipped until they change)", result["failures"], lambda f: f"{f['path']}: {f['error']}")
        else:
            print("no broken files")
    info = result["index"]
    print(f"index {info['db']}: {info['photos']} photos, {info['failures']} broken files")


def cmd_search(args: argparse.Namespace, make_encoder: EncoderFactory) -> dict:
    """Rank the index's photos by the query; the matches as JSON-ready data."""
    from edgeclip.index import PhotoIndex

    if args.query is None and args.image is None:
        raise InputError("search needs a QUERY, an --image, or both")
    db = args.db or default_db()
    if not db.is_file():
        raise InputError(f"no index at {db}; build one with `edgeclip index BUNDLE PATH... --db {db}`")
    with PhotoIndex(db) as index:
        bundle = args.bundle or index.bundle_path
        identity = index.identity
    if identity is None:
        raise InputError(f"index {db} is empty; build it with `edgeclip index BUNDLE PATH... --db {db}`")
    if not bundle:
        raise InputError(f"index {db} does not say which bundle built it; give --bundle DIR")
    try:
        encoder = make_encoder(args, bundle)
    except BundleError as exc:
        raise BundleError(f"{exc} (the query is embedded with the bundle that built the index; give --bundle DIR)") from None
    start = time.perf_counter()
    with PhotoIndex(db, encoder) as index:
        matches = index.search(text=args.query, image=args.image, top_k=args.top_k, weight=args.weight)
    return {"db": str(db), "query": args.query, "image": args.image, "weight": args.weight,
            "seconds": round(time.perf_counter() - start, 4),
            "results": [{"path": m.path, "score": round(m.score, 6)} for m in matches]}


def print_search(result: dict) -> None:
    if not result["results"]:
        print("no results: the index is empty")
    for r in result["results"]:
        print(f"{r['score']:.4f}  {r['path']}")


__all__ = ["add_parsers", "cmd_index", "cmd_search", "default_db", "print_index", "print_search"]
