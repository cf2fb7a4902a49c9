"""Parity proofs: a JSON document of stream hashes, signed with HMAC-SHA256.

A proof says which streams a run produced and what they hashed to, and binds that to
the inputs: the graph file's SHA-256, every data file's SHA-256 and the tickgraph
version. Its ``signature`` is HMAC-SHA256 (RFC 2104, FIPS 198-1) over the canonical
bytes of the document without ``signature``; the key is the UTF-8 value of the
environment variable :data:`KEY_ENV`. The key is never printed, logged or stored;
a proof carries no fingerprint of it either (a fingerprint would let anyone test
guesses of a weak key offline).

Document (canonical file form: orjson, keys sorted, 2-space indent, final newline)::

    {
      "format": "tickgraph-parity-proof/1",
      "canonical": {"version": "tickgraph-parity/2", "float_bits": 53, "checkpoint_every": 1000},
      "tickgraph_version": "0.1.0",
      "graph": {"file": "replay_parity.yaml", "sha256": "..."} | null,
      "data_files": [{"path": "../fixtures/...csv", "bytes": 123, "sha256": "..."}],
      "streams": {"bars": {"fields": [...], "order": "bar_end", "messages": 14321,
                           "hash": "...", "checkpoints": [{"messages": 1000, "hash": "..."}],
                           "out_of_order": 0}},
      "signature": {"algorithm": "HMAC-SHA256", "value": "<64 hex>"}
    }

The document holds no wall-clock time, so two runs that hash alike write byte-identical
proofs. Verification accepts a file only if it is byte-identical to the canonical form
of what it parses to and the signature matches: any changed, added or removed byte
fails (an edited value breaks the signature, reformatting breaks the canonical form).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from parity.canonical import CANONICAL_VERSION

__all__ = [
    "KEY_ENV",
    "PROOF_FORMAT",
    "SIGNATURE_ALGORITHM",
    "ProofError",
    "ProofVerificationError",
    "signing_key",
    "tickgraph_version",
    "file_sha256",
    "build_proof",
    "sign_proof",
    "proof_bytes",
    "write_proof",
    "load_proof",
    "verify_proof",
]

#: Environment variable holding the HMAC key.
KEY_ENV = "TICKGRAPH_PARITY_KEY"
PROOF_FORMAT = "tickgraph-parity-proof/1"
SIGNATURE_ALGORITHM = "HMAC-SHA256"
_CHUNK_BYTES = 1 << 20


class ProofError(ValueError):
    """A proof cannot be made, read or verified; the message says why (never the key)."""


class ProofVerificationError(ProofError):
    """A readable proof failed verification: unsigned, bad signature, or not canonical bytes."""


def signing_key(env: Mapping[str, str] | None = None, purpose: str = "sign or verify parity proofs") -> bytes:
    """The HMAC key: the UTF-8 bytes of ``$TICKGRAPH_PARITY_KEY``.

    Args:
        env: environment to read (default ``os.environ``).
        purpose: what the key is needed for, for the error message.

    Returns:
        The key bytes.

    Raises:
        ProofError: the variable is unset or empty (the message names it).
    """
    value = (os.environ if env is None else env).get(KEY_ENV)
    if value is None:
        raise ProofError(f"environment variable {KEY_ENV} is not set: it holds the secret key needed to {purpose}")
    if not value:
        raise ProofError(f"environment variable {KEY_ENV} is empty: it must hold the secret key needed to {purpose}")
    return value.encode("utf-8")


def tickgraph_version() -> str:
    """The installed tickgraph version (package metadata), or ``"unknown"`` if not installed."""
    try:
        return metadata.version("tickgraph")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_sha256(path: str | Path) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _display_path(path: Path, base_dir: Path | None) -> str:
    """``path`` relative to ``base_dir`` (POSIX separators) when possible, else absolute."""
    if base_dir is not None:
        try:
            return Path(os.path.relpath(path, base_dir)).as_posix()
        except ValueError:  # another drive on Windows
            pass
    return Path(path).as_posix()


def build_proof(
    streams: Mapping[str, Mapping[str, Any]],
    *,
    checkpoint_every: int,
    float_bits: int,
    graph_file: str | Path | None = None,
    data_files: Iterable[str | Path] = (),
    base_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The unsigned proof document.

    Args:
        streams: stream name -> ``{"fields", "order", "messages", "hash",
            "checkpoints", "out_of_order"}`` (``StreamHasher.to_dict`` plus ordering).
        checkpoint_every: messages between checkpoints.
        float_bits: significant bits kept of floats' significands.
        graph_file: the graph file of the run (hashed), or None.
        data_files: input files of the run (hashed), in a stable order; duplicates dropped.
        base_dir: paths are recorded relative to this (the graph file's directory).

    Returns:
        The document without ``signature``.

    Raises:
        OSError: the graph file or a data file cannot be read.
    """
    base = Path(base_dir) if base_dir is not None else None
    graph = None
    if graph_file is not None:
        digest, _ = file_sha256(graph_file)
        graph = {"file": Path(graph_file).name, "sha256": digest}
    files = []
    for path in dict.fromkeys(Path(p) for p in data_files):
        digest, size = file_sha256(path)
        files.append({"path": _display_path(path, base), "bytes": size, "sha256": digest})
    return {
        "format": PROOF_FORMAT,
        "canonical": {
            "version": CANONICAL_VERSION,
            "float_bits": float_bits,
            "checkpoint_every": checkpoint_every,
        },
        "tickgraph_version": tickgraph_version(),
        "graph": graph,
        "data_files": files,
        "streams": {name: dict(streams[name]) for name in sorted(streams)},
    }


def _signed_message(document: Mapping[str, Any]) -> bytes:
    """Canonical bytes that the signature covers: the document minus ``signature``, keys sorted."""
    body = {k: v for k, v in document.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign_proof(document: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """``document`` with ``signature`` = HMAC-SHA256(key, canonical bytes) (RFC 2104).

    Args:
        document: an unsigned (or previously signed) proof.
        key: the HMAC key (:func:`signing_key`).

    Returns:
        A new dict with ``signature: {"algorithm": "HMAC-SHA256", "value": hex}``.
    """
    value = hmac.new(key, _signed_message(document), hashlib.sha256).hexdigest()
    signed = {k: v for k, v in document.items() if k != "signature"}
    signed["signature"] = {"algorithm": SIGNATURE_ALGORITHM, "value": value}
    return signed


def proof_bytes(document: Mapping[str, Any]) -> bytes:
    """The canonical file form of a proof: orjson, sorted keys, 2-space indent, newline."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def write_proof(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write a proof atomically (temporary file, then rename); creates parent folders.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(proof_bytes(document))
    os.replace(temporary, path)
    return path


def load_proof(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Read and parse a proof file (no signature check).

    Returns:
        ``(document, raw file bytes)``.

    Raises:
        ProofError: unreadable, not JSON, or not a tickgraph parity proof.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProofError(f"{path}: cannot read the proof: {exc.strerror or exc}") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProofError(f"{path}: not valid JSON ({exc}); the proof is damaged or not a proof") from None
    if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ProofError(f"{path}: not a tickgraph parity proof (format is {found!r}, expected {PROOF_FORMAT!r})")
    if not isinstance(document.get("streams"), dict):
        raise ProofError(f"{path}: the proof has no 'streams' object")
    return document, raw


def verify_proof(path: str | Path, key: bytes) -> dict[str, Any]:
    """Check a proof file's signature and canonical form.

    Args:
        path: the proof file.
        key: the HMAC key (:func:`signing_key`).

    Returns:
        The verified document.

    Raises:
        ProofError: unreadable, or not a proof.
        ProofVerificationError: no signature; the signature does not match (content
            changed after signing, or another key); or the file is not byte-identical to
            its canonical form (bytes added, removed or reformatted).
    """
    document, raw = load_proof(path)
    signature = document.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        raise ProofVerificationError(f"{path}: the proof is not signed (no 'signature' object with a 'value')")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise ProofVerificationError(
            f"{path}: unsupported signature algorithm {signature.get('algorithm')!r} (expected {SIGNATURE_ALGORITHM!r})"
        )
    expected = sign_proof(document, key)["signature"]["value"]
    if not hmac.compare_digest(expected, signature["value"]):
        raise ProofVerificationError(
            f"{path}: signature does not match: the proof was modified after it was signed, "
            f"or {KEY_ENV} is not the key it was signed with"
        )
    if raw != proof_bytes(document):
        raise ProofVerificationError(
            f"{path}: the signature matches but the file is not byte-identical to its canonical form: "
            "bytes were added, removed or reformatted after signing"
        )
    return document
