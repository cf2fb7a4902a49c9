"""``python run.py parity ...``: verify and compare parity proofs, compare bars with a reference.

    python run.py parity verify PROOF [PROOF ...]
    python run.py parity compare A B [--json OUT] [--no-verify]
    python run.py parity bars --local LOCAL.csv|.parquet|DIR --reference REF.csv \\
        [--symbol S] [--timeframe TF] [--price-tolerance X] [--volume-tolerance Y] \\
        [--output diff.json] [--time-unit s|ms|us|ns] [--tz ZONE]

Exit codes: 0 verified / match / within tolerance; 1 verification failed / streams
diverge / bars differ; 2 bad arguments or unreadable input. Signing and verifying need
the HMAC key in ``$TICKGRAPH_PARITY_KEY``; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["main", "build_parser"]

_OK, _MISMATCH, _USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The ``parity`` argument parser with its ``verify``, ``compare`` and ``bars`` commands."""
    parser = argparse.ArgumentParser(
        prog="python run.py parity",
        description="Parity proofs (verify, compare) and bar comparison with a reference export.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{verify,compare,bars}")

    verify = commands.add_parser("verify", help="check the HMAC-SHA256 signature of proof files")
    verify.add_argument("proofs", nargs="+", type=Path, metavar="PROOF")

    compare = commands.add_parser("compare", help="compare two proofs: match, or the first diverging checkpoint")
    compare.add_argument("a", type=Path, metavar="A")
    compare.add_argument("b", type=Path, metavar="B")
    compare.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the comparison as JSON")
    compare.add_argument("--no-verify", action="store_true", help="do not check signatures (no key needed)")

    bars = commands.add_parser("bars", help="compare local bars with a reference CSV (e.g. a charting platform export)")
    bars.add_argument("--local", required=True, type=Path, help="bars CSV, Parquet file, or parquet_sink folder")
    bars.add_argument("--reference", required=True, type=Path, help="reference CSV: time, open, high, low, close, volume")
    bars.add_argument("--symbol", default=None, help="pick this symbol from the local bars")
    bars.add_argument("--timeframe", default=None, help="pick this timeframe from the local bars (1s 1m 5m 15m 1h 1d)")
    bars.add_argument("--price-tolerance", default="0", metavar="X", help="allowed |difference| of open/high/low/close/vwap; "
                      "X%% is relative to the reference (default 0)")
    bars.add_argument("--volume-tolerance", default="0", metavar="Y", help="allowed |difference| of volume; Y%% relative (default 0)")
    bars.add_argument("--output", type=Path, default=None, metavar="DIFF.json", help="write the diff report here")
    bars.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), default=None,
                      help="unit of numeric times (default: guessed from their magnitude)")
    bars.add_argument("--tz", default="UTC", help="zone of times without offset and of dates (default UTC)")
    return parser


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return _USAGE


def _verify(args: argparse.Namespace) -> int:
    from parity.proof import ProofError, signing_key, verify_proof

    try:
        key = signing_key(purpose="verify parity proofs")
    except ProofError as exc:
        return _error(str(exc))
    failed = 0
    for path in args.proofs:
        try:
            document = verify_proof(path, key)
        except ProofError as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            failed += 1
            continue
        streams = document["streams"]
        print(f"OK {path}: signature valid (HMAC-SHA256), tickgraph {document.get('tickgraph_version')}")
        graph = document.get("graph")
        if graph:
            print(f"  graph {graph['file']} sha256 {graph['sha256']}")
        print(f"  {len(document.get('data_files', []))} data file(s) hashed")
        for name, stream in streams.items():
            print(f"  {name:<12} {stream['messages']:>12,} messages  {stream['hash']}")
    return _MISMATCH if failed else _OK


def _compare(args: argparse.Namespace) -> int:
    from parity.compare import compare_proofs
    from parity.proof import ProofError, ProofVerificationError, load_proof, signing_key, verify_proof

    try:
        if args.no_verify:
            documents = [load_proof(args.a)[0], load_proof(args.b)[0]]
        else:
            key = signing_key(purpose="verify the proofs' signatures (or pass --no-verify)")
            documents = [verify_proof(args.a, key), verify_proof(args.b, key)]
    except ProofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _MISMATCH if isinstance(exc, ProofVerificationError) else _USAGE
    result = compare_proofs(*documents)
    print(f"A = {args.a}\nB = {args.b}" + ("" if args.no_verify else "\nsignatures: both valid"))
    for stream in result.streams:
        print(f"  {stream.detail}")
    for note in result.notes:
        print(f"  note: {note}")
    print("MATCH" if result.match else "DIFFERENT")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"a": str(args.a), "b": str(args.b), **result.to_dict()}, indent=2) + "\n")
    return _OK if result.match else _MISMATCH


def _bars(args: argparse.Namespace) -> int:
    from parity.bars import BarCompareError, compare_bars, parse_tolerance, read_local, read_reference

    try:
        ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        return _error(f"--tz {args.tz!r} is not an IANA time zone name (e.g. UTC, America/New_York)")
    try:
        price = parse_tolerance(args.price_tolerance, "--price-tolerance")
        volume = parse_tolerance(args.volume_tolerance, "--volume-tolerance")
        reference, ref_info = read_reference(args.reference, args.time_unit, args.tz)
        local, local_info = read_local(args.local, args.symbol, args.timeframe, args.time_unit, args.tz)
    except BarCompareError as exc:
        return _error(str(exc))
    report = compare_bars(local, reference, price, volume, date_only=ref_info["date_only"], tz=args.tz)
    series = " ".join(str(local_info[k]) for k in ("symbol", "timeframe") if local_info.get(k))
    document: dict[str, Any] = {
        "local": str(args.local),
        "reference": str(args.reference),
        "symbol": local_info.get("symbol"),
        "timeframe": local_info.get("timeframe"),
        "columns": {"local": local_info["columns"], "reference": ref_info["columns"]},
        "duplicates_dropped": {"local": local_info["duplicates"], "reference": ref_info["duplicates"]},
        "matched_by": "date" if ref_info["date_only"] else "bar open time",
        **report,
    }
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    counts = report["counts"]
    fields = sorted({f for d in report["differing"] for f in d["fields"]})
    print(
        f"{series + ': ' if series else ''}{counts['local']:,} local bars, {counts['reference']:,} reference bars: "
        f"{counts['equal']:,} within tolerance, {counts['differing']:,} differing"
        + (f" ({', '.join(fields)})" if fields else "")
        + f", {counts['missing']:,} missing (reference only), {counts['extra']:,} extra (local only)"
    )
    print(
        f"tolerances: price {report['tolerances']['price']}, volume {report['tolerances']['volume']} -> "
        + ("WITHIN TOLERANCE" if report["within_tolerance"] else "OUTSIDE TOLERANCE")
        + (f"; report: {args.output}" if args.output is not None else "")
    )
    return _OK if report["within_tolerance"] else _MISMATCH


def main(argv: list[str]) -> int:
    """Run ``parity`` with ``argv`` (the arguments after ``parity``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code) if isinstance(exc.code, int) else _USAGE
    handler = {"verify": _verify, "compare": _compare, "bars": _bars}[args.command]
    return handler(args)
