"""Checkpoint files: one per node shard and checkpoint, written atomically; completeness; pruning.

Layout under a run's checkpoint directory (``runtime.checkpoint_dir``/<run id>/)::

    7/source#0.pkl  7/normalizer#0.pkl  7/bars#0.pkl ...   the shards' states at barrier 7
    7/COMPLETE.json                                         written by the driver once all are there
    final/store#0.pkl                                      a shard that finished (end-of-stream)

A host writes its file when barrier ``n`` is aligned (its operator's ``snapshot()`` plus
its own counters), through a temporary file and ``os.replace``, so a reader sees a whole
file or none. Checkpoint ``n`` is *complete* when every shard of the graph has written
``n`` -- or had finished before barrier ``n`` could reach it (``final/``: all its inputs
ended before the checkpoint began). The driver then writes ``COMPLETE.json`` and deletes
older checkpoints; a restart or ``--resume`` restores the newest complete one.

The files are pickles of plain data and numpy/Arrow arrays, readable only by the same
tickgraph version (the operators' ``restore`` checks their own snapshot versions).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["CheckpointStore", "FINAL"]

#: The directory name of the states of shards that finished.
FINAL = "final"
_COMPLETE = "COMPLETE.json"


def _file_name(channel: str) -> str:
    return channel.replace("/", "_") + ".pkl"


def _batch_from_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(data).read_next_batch()


def _table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _array_from_ipc(data: bytes) -> pa.Array:
    return _batch_from_ipc(data).column(0)


def _ipc(value: pa.RecordBatch | pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, value.schema) as writer:
        writer.write(value)
    return sink.getvalue().to_pybytes()


class _ArrowCompactPickler(pickle.Pickler):
    """Pickles Arrow batches, tables and arrays through the IPC format, which writes only
    the rows a slice covers: pyarrow's own pickling of a slice carries its parent's whole
    buffers (a 5-row slice of a 1M-row batch pickles as 8 MB), and operators buffer slices."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, pa.RecordBatch):
            return _batch_from_ipc, (_ipc(obj),)
        if isinstance(obj, pa.Table):
            return _table_from_ipc, (_ipc(obj),)
        if isinstance(obj, pa.Array):
            return _array_from_ipc, (_ipc(pa.record_batch([obj], names=["a"])),)
        return NotImplemented


class CheckpointStore:
    """The checkpoint files of one graph run.

    Args:
        directory: the run's checkpoint directory (created on first write).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.directory)!r})"

    def write(self, checkpoint: int | str, channel: str, state: Any) -> Path:
        """Persist ``state`` of shard ``channel`` (``node#shard``) for ``checkpoint`` (an id or
        :data:`FINAL`), atomically. Returns the file."""
        folder = self.directory / str(checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / _file_name(channel)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as out:
                _ArrowCompactPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def read(self, checkpoint: int | str, channel: str) -> Any | None:
        """The state of ``channel`` at ``checkpoint``, or None if it has none there."""
        path = self.directory / str(checkpoint) / _file_name(channel)
        if not path.is_file():
            return None
        with path.open("rb") as source:
            return pickle.load(source)

    def state_for_restore(self, checkpoint: int, channel: str) -> tuple[str, Any] | None:
        """``("checkpoint", state)`` of ``channel`` at ``checkpoint``, else ``("final", state)``
        if it had finished before that checkpoint, else None."""
        state = self.read(checkpoint, channel)
        if state is not None:
            return "checkpoint", state
        final = self.read(FINAL, channel)
        return None if final is None else ("final", final)

    def is_complete(self, checkpoint: int, channels: Iterable[str]) -> bool:
        """Whether every channel has a state for ``checkpoint`` or a final state."""
        folder, final = self.directory / str(checkpoint), self.directory / FINAL
        return all((folder / _file_name(c)).is_file() or (final / _file_name(c)).is_file() for c in channels)

    def mark_complete(self, checkpoint: int, metadata: dict[str, Any]) -> None:
        """Record ``checkpoint`` as complete (``COMPLETE.json``) and delete older checkpoints."""
        folder = self.directory / str(checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{_COMPLETE}.tmp"
        temporary.write_text(json.dumps({"checkpoint": checkpoint, **metadata}, sort_keys=True), encoding="utf-8")
        os.replace(temporary, folder / _COMPLETE)
        for older in self.checkpoints():
            if older < checkpoint:
                shutil.rmtree(self.directory / str(older), ignore_errors=True)

    def checkpoints(self) -> list[int]:
        """The checkpoint ids with a folder here, ascending."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit())

    def latest_complete(self) -> int | None:
        """The newest checkpoint with ``COMPLETE.json``, or None."""
        done = [n for n in self.checkpoints() if (self.directory / str(n) / _COMPLETE).is_file()]
        return done[-1] if done else None

    def metadata(self, checkpoint: int) -> dict[str, Any]:
        """The driver's record of a complete checkpoint."""
        return json.loads((self.directory / str(checkpoint) / _COMPLETE).read_text(encoding="utf-8"))

    def remove(self) -> None:
        """Delete the run's checkpoints (it completed: nothing to resume)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def clear_final(self, channels: Iterable[str]) -> None:
        """Forget the final states of ``channels`` (shards a restart sets running again)."""
        for channel in channels:
            (self.directory / FINAL / _file_name(channel)).unlink(missing_ok=True)

    def discard_after(self, checkpoint: int | None) -> None:
        """Delete every incomplete checkpoint newer than ``checkpoint`` (a restart abandons them)."""
        for newer in self.checkpoints():
            if checkpoint is None or newer > checkpoint:
                if not (self.directory / str(newer) / _COMPLETE).is_file():
                    shutil.rmtree(self.directory / str(newer), ignore_errors=True)
