"""Subcommands of ``python run.py``: one module per command, each with ``main(argv) -> int``.

    python run.py parity verify PROOF        -> commands/parity.py
    python run.py export bars ...             -> commands/export.py
    python run.py query "SQL"                  -> commands/query.py
    python run.py backtest run CONFIG.json    -> commands/backtest.py
    python run.py serve ...                   -> commands/serve.py
    python run.py pre-paper --manifest M      -> commands/pre_paper.py

``python run.py --graph ...`` (no subcommand) runs a graph (``run.py`` itself).
"""

from __future__ import annotations

import importlib

__all__ = ["SUBCOMMANDS", "dispatch"]

#: Subcommand -> module implementing ``main(argv: list[str]) -> int``.
SUBCOMMANDS: dict[str, str] = {
    "parity": "commands.parity",
    "export": "commands.export",
    "query": "commands.query",
    "backtest": "commands.backtest",
    "serve": "commands.serve",
    "pre-paper": "commands.pre_paper",
}


def dispatch(name: str, argv: list[str]) -> int:
    """Run subcommand ``name`` with the remaining arguments; returns the exit code."""
    return importlib.import_module(SUBCOMMANDS[name]).main(argv)
