"""Parity: canonical stream hashing, signed parity proofs, proof and bar comparison.

Modules:
    * :mod:`parity.canonical`: one stream row -> canonical bytes; SHA-256 hash chains
      with checkpoints (:class:`~parity.canonical.StreamHasher`).
    * :mod:`parity.ordering`: the order in which rows of a stream are hashed, so that
      batching, sharding and timing never change a hash (the determinism argument).
    * :mod:`parity.proof`: proof documents, HMAC-SHA256 signing and verification.
    * :mod:`parity.compare`: two proofs -> match, or the first diverging checkpoint.
    * :mod:`parity.bars`: stored or exported bars vs a reference export (a charting
      platform's CSV), within price and volume tolerances.

The operator that hashes a running graph's streams is ``actors/parity.py`` (node kind
``parity``); the command line is ``python run.py parity ...`` (``commands/parity.py``).
"""

from __future__ import annotations
