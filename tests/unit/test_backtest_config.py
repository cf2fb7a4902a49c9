"""Run configs (backtest/config.py), canonical JSON and the run hash (backtest/hashing.py).

Bad configs fail before any work, naming the field; the run hash ignores spelling
(key order, defaults written out) and changes with the config, the data and the version.
"""

from __future__ import annotations

import json
import shutil

import pytest

from backtest.config import ConfigError, load_run_config, parse_run_config
from backtest.data import check_symbols, data_identity
from backtest.hashing import canonical_json, run_hash
from backtest.runner import canonical_config, prepare, run_backtest
from tests.backtests import config_doc, tick_files


@pytest.mark.parametrize("change,field,message", [
    ({"strategy": {"name": "turtle_soup"}}, "strategy.name", "unknown strategy 'turtle_soup'"),
    ({"strategy": {"name": "dual_sma", "params": {"fast": 30, "slow": 30}}}, "strategy.params.slow", "slow \\(30\\) must be greater than fast \\(30\\)"),
    ({"start": "2020-02-23T00:00:00Z", "end": "2020-02-22T00:00:00Z"}, "end", "must be after start"),
    ({"execution": {"fee_bps": -0.5}}, "execution.fee_bps", "greater than or equal to 0"),
    ({"risk": {"model": "martingale"}}, "risk.model", "fixed_fraction"),
    ({"timeframe": "7q"}, "timeframe", "'7q' is not a timeframe"),
    ({"strategy": {"name": "mean_reversion"}}, "indicators", "reads the 'vwap_deviation_bps' signal"),
    ({"symbols": ["AMZN", "AMZN"]}, "symbols", "must be unique"),
    ({"data": {"source": "ftp"}}, "data", "source"),
])  # fmt: skip
def test_bad_configs_name_the_field(change, field, message):
    doc = {**config_doc(), **change}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_run_config(doc, "cfg.json")
    assert any(p.startswith(f"{field}") for p in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith("cfg.json: ")


def test_an_unknown_symbol_fails_before_any_work(tmp_path):
    config = parse_run_config(config_doc(["AMZN", "MSFT"]))
    with pytest.raises(ConfigError, match=r"symbols\[1\]: unknown symbol 'MSFT' \(the data has: AMZN, BTCUSDT\)"):
        check_symbols(config, tmp_path)
    root = tmp_path / "artifacts"
    with pytest.raises(ConfigError):
        run_backtest(config, root=root)
    assert not root.exists()  # nothing was written, nothing ran


def test_a_missing_store_is_named(tmp_path):
    config = parse_run_config({**config_doc(), "data": {"source": "store", "url": f"sqlite:///{tmp_path / 'none.db'}"}})
    with pytest.raises(ConfigError, match="data.url: the SQLite store .* does not exist"):
        check_symbols(config, tmp_path)


def test_json_errors_carry_line_and_column(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"symbols": ["AMZN"],\n "timeframe": }', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 2, column 15: invalid JSON"):
        load_run_config(path)


def test_the_hash_ignores_spelling_and_defaults():
    doc = config_doc()
    shuffled = json.loads(json.dumps(dict(reversed(list(doc.items())))))
    explicit = {**doc, "strategy": {"name": "dual_sma", "params": {"slow": 30, "fast": 10, "allow_short": True}},
                "start": 1_340_236_800_000_000_000}  # fmt: skip
    texts = {canonical_json(canonical_config(parse_run_config(d))) for d in (doc, shuffled, explicit)}
    assert len(texts) == 1
    (text,) = texts
    assert text.endswith("\n") and ": " not in text and json.loads(text)["strategy"]["params"]["allow_short"] is True
    other = canonical_json(canonical_config(parse_run_config({**doc, "seed": 2})))
    assert run_hash(text, "d" * 64, "0.1.0") != run_hash(other, "d" * 64, "0.1.0")
    assert run_hash(text, "d" * 64, "0.1.0") != run_hash(text, "e" * 64, "0.1.0")
    assert run_hash(text, "d" * 64, "0.1.0") != run_hash(text, "d" * 64, "0.2.0")


def test_the_data_hash_follows_the_file_contents(tmp_path):
    files = tick_files()
    copy = tmp_path / "trades.csv"
    shutil.copyfile(files[1]["path"], copy)
    doc = {**config_doc(), "data": {"source": "ticks", "files": [files[0], {**files[1], "path": str(copy)}]}}
    before = prepare(parse_run_config(doc), tmp_path)
    data = bytearray(copy.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")  # one digit of the last trade's size
    copy.write_bytes(bytes(data))
    after = prepare(parse_run_config(doc), tmp_path)
    assert before.run_hash != after.run_hash
    assert data_identity(parse_run_config(doc), tmp_path)["inputs"][-1]["file"] == "trades.csv"


def test_a_store_password_never_reaches_the_canonical_config():
    doc = {**config_doc(), "data": {"source": "store", "url": "postgresql://quant:s3cret@db.internal/market"}}
    text = canonical_json(canonical_config(parse_run_config(doc)))
    assert "s3cret" not in text and "***" in text
