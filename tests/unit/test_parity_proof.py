"""Signed parity proofs: signing, verification failures, and finding the first divergence.

The bars hashed here are real: 1s bars of the Binance BTCUSDT trades computed by the
independent pandas reference (tests/reference.py).
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import orjson
import pyarrow as pa
import pytest

from graph.schemas import BAR
from parity.compare import compare_proofs
from parity.ordering import OrderedStream
from parity.proof import (
    KEY_ENV,
    ProofError,
    ProofVerificationError,
    build_proof,
    sign_proof,
    signing_key,
    verify_proof,
    write_proof,
)
from tests.conftest import ROOT, TARDIS_TRADES
from tests.reference import reference_bars, tardis_trades

KEY = b"a test key, not a secret"


@pytest.fixture(scope="module")
def reference_1s() -> pa.RecordBatch:
    frame = reference_bars(tardis_trades(), "1s").reset_index()
    frame["symbol"], frame["timeframe"], frame["status"] = "BTCUSDT", "1s", "confirmed"
    frame["trade_count"] = frame["trade_count"].astype("int64")
    return pa.RecordBatch.from_pandas(frame[BAR.names], schema=BAR, preserve_index=False)


def proof_of(batch: pa.RecordBatch, every: int = 500, **extra) -> dict:
    stream = OrderedStream("bars", batch.schema, checkpoint_every=every)
    stream.add(batch)
    stream.finish()
    streams = {"bars": {**stream.hasher.to_dict(), "order": stream.order, "out_of_order": 0}}
    return sign_proof(build_proof(streams, checkpoint_every=every, float_bits=32, **extra), KEY)


def with_close(batch: pa.RecordBatch, index: int, close: float) -> pa.RecordBatch:
    closes = batch.column("close").to_pylist()
    closes[index] = close
    return batch.set_column(BAR.get_field_index("close"), "close", pa.array(closes, pa.float64()))


def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "parity", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def signed(tmp_path, reference_1s):
    path = tmp_path / "run.proof.json"
    write_proof(path, proof_of(reference_1s, graph_file=ROOT / "config" / "replay.yaml", data_files=[TARDIS_TRADES],
                               base_dir=ROOT / "config"))  # fmt: skip
    return path


def test_a_signed_proof_verifies_and_binds_its_inputs(signed, reference_1s):
    document = verify_proof(signed, KEY)
    bars = document["streams"]["bars"]
    assert bars["messages"] == reference_1s.num_rows
    assert [c["messages"] for c in bars["checkpoints"]] == list(range(500, reference_1s.num_rows + 1, 500))
    assert document["data_files"] == [{
        "path": "../fixtures/tardis_binance_futures_btcusdt/trades.csv",
        "bytes": TARDIS_TRADES.stat().st_size,
        "sha256": hashlib.sha256(TARDIS_TRADES.read_bytes()).hexdigest(),
    }]  # fmt: skip
    assert document["graph"] == {"file": "replay.yaml", "sha256": hashlib.sha256((ROOT / "config/replay.yaml").read_bytes()).hexdigest()}
    # The signature is HMAC-SHA256 (RFC 2104) over the document without it, keys sorted.
    body = {k: v for k, v in document.items() if k != "signature"}
    expected = hmac.new(KEY, orjson.dumps(body, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()
    assert document["signature"] == {"algorithm": "HMAC-SHA256", "value": expected}


def test_changing_one_byte_of_a_value_fails_verification(signed):
    raw = signed.read_bytes()
    at = raw.index(b'"messages": ') + len(b'"messages": ')
    signed.write_bytes(raw[:at] + (b"9" if raw[at:at + 1] != b"9" else b"8") + raw[at + 1:])
    with pytest.raises(ProofVerificationError, match="signature does not match: the proof was modified after it was signed"):
        verify_proof(signed, KEY)


def test_adding_one_byte_of_whitespace_fails_verification(signed):
    signed.write_bytes(signed.read_bytes().replace(b"{", b"{ ", 1))
    with pytest.raises(ProofVerificationError, match="not byte-identical to its canonical form"):
        verify_proof(signed, KEY)


def test_a_damaged_proof_fails_clearly(signed):
    signed.write_bytes(signed.read_bytes()[:-40])
    with pytest.raises(ProofError, match="not valid JSON"):
        verify_proof(signed, KEY)


def test_a_wrong_key_fails_and_names_the_variable_not_the_key(signed):
    with pytest.raises(ProofVerificationError, match=f"or {KEY_ENV} is not the key it was signed with") as info:
        verify_proof(signed, b"another key")
    assert "another key" not in str(info.value)


def test_a_missing_or_empty_key_is_named():
    with pytest.raises(ProofError, match=f"environment variable {KEY_ENV} is not set"):
        signing_key({})
    with pytest.raises(ProofError, match=f"environment variable {KEY_ENV} is empty"):
        signing_key({KEY_ENV: ""})
    assert signing_key({KEY_ENV: "k"}) == b"k"


def test_compare_finds_the_checkpoint_after_one_altered_bar(reference_1s):
    altered = with_close(reference_1s, 1234, reference_1s.column("close")[1234].as_py() + 0.5)  # message 1,235
    result = compare_proofs(proof_of(reference_1s), proof_of(altered))
    (bars,) = result.streams
    assert not result.match
    assert (bars.status, bars.checkpoint, bars.first_message, bars.last_message) == ("diverged", 1500, 1001, 1500)
    assert "DIVERGED at checkpoint 1,500" in bars.detail and "messages 1,001..1,500" in bars.detail


def test_compare_reports_a_truncated_stream_after_the_last_common_checkpoint(reference_1s):
    result = compare_proofs(proof_of(reference_1s), proof_of(reference_1s.slice(0, 1100)))
    (bars,) = result.streams
    assert (bars.status, bars.checkpoint, bars.first_message) == ("diverged", None, 1001)
    assert bars.last_message == reference_1s.num_rows


def test_identical_proofs_match_and_streams_missing_on_one_side_are_named(reference_1s):
    a = proof_of(reference_1s)
    assert compare_proofs(a, proof_of(reference_1s)).match
    b = dict(a, streams={})
    (only,) = compare_proofs(a, b).streams
    assert only.status == "only_in_a"


def test_cli_verify_and_compare(tmp_path, signed, reference_1s):
    ok = cli("verify", str(signed), key=KEY.decode())
    assert ok.returncode == 0, ok.stderr
    assert "signature valid (HMAC-SHA256)" in ok.stdout
    wrong = cli("verify", str(signed), key="wrong")
    assert wrong.returncode == 1 and "signature does not match" in wrong.stderr
    missing = cli("verify", str(signed))
    assert missing.returncode == 2 and f"environment variable {KEY_ENV} is not set" in missing.stderr
    other = tmp_path / "altered.proof.json"
    write_proof(other, proof_of(with_close(reference_1s, 1600, 1.0)))
    plain = tmp_path / "plain.proof.json"
    write_proof(plain, proof_of(reference_1s))
    diverged = cli("compare", str(plain), str(other), "--json", str(tmp_path / "cmp.json"), key=KEY.decode())
    assert diverged.returncode == 1, diverged.stderr
    assert "DIVERGED at checkpoint 2,000" in diverged.stdout and "messages 1,501..2,000" in diverged.stdout
    assert orjson.loads((tmp_path / "cmp.json").read_bytes())["streams"][0]["checkpoint"] == 2000
    same = cli("compare", str(plain), str(plain), key=KEY.decode())
    assert same.returncode == 0 and "MATCH" in same.stdout
    for proc in (ok, wrong, missing, diverged, same):
        assert KEY.decode() not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
