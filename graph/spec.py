"""The YAML graph spec: pydantic models, loading, ``${VAR}`` interpolation and validation.

A graph file::

    name: replay
    runtime: {max_in_flight: 8, pump_events: 8, chain: true}
    event_time: {allowed_lateness_ms: 0, late_policy: drop, idle_timeout_ms: 5000}
    nodes:
      - id: source
        kind: file_replay
        params: {files: [...]}
      - id: bars
        kind: bars
        inputs: [normalizer]          # "node" = its default (first) output stream
        parallelism: 2                # shards; keyed by `key`
        key: symbol
      - id: store
        kind: sql_store
        inputs: [bars, normalizer.quarantine]   # "node.stream" = a named output

The whole file is validated before any actor starts; every problem is reported with
its YAML path (``nodes[2].params.timeframes[0]: '7q' is not a timeframe ...``).
Environment values fill ``${VAR}`` and ``${VAR:-default}`` inside string values;
they are substituted after YAML parsing, so a value can never inject YAML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from db.engine import writable_store_url
from graph.operator import Source
from graph.params import output_dir_problem
from graph.registry import KINDS, load_kind
from graph.text import printable
from graph.times import DEFAULT_EARLIEST_NS, DEFAULT_LATEST_NS, EventTimeRange, parse_time_ns

__all__ = [
    "GraphError",
    "NodeSpec",
    "RuntimeSettings",
    "EventTimeSettings",
    "GraphSpec",
    "LoadedGraph",
    "load_graph",
    "resolve_graph_path",
    "parse_override",
    "yaml_path",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class GraphError(ValueError):
    """A graph file that cannot run: each line of the message names the file and a YAML path."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class NodeSpec(BaseModel):
    """One node: an actor kind with params, fed by ``inputs``.

    Attributes:
        id: unique node id (``[A-Za-z_][A-Za-z0-9_]*``).
        kind: a registered kind (``actors.KINDS``).
        params: the kind's parameters, validated by its ``Params`` model.
        inputs: ``"node"`` (that node's default output stream) or ``"node.stream"``.
        parallelism: number of shards (actors) for this node, >= 1.
        key: partition column (e.g. ``symbol``) routing rows to shards by stable hash;
            required when ``parallelism > 1`` for stateful keyed kinds.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    parallelism: int = Field(default=1, ge=1, le=1024)
    key: str | None = None


class RuntimeSettings(BaseModel):
    """Runtime knobs for a whole graph.

    Attributes:
        max_in_flight: pending batches allowed per edge (sender -> receiver shard).
        pump_events: source events (batches/watermarks) moved per driver step.
        chain: run a parallelism-1 node whose only upstream node has parallelism 1
            in its upstream's actor (Flink's operator chaining): one serialization
            hop fewer. ``false`` gives every node shard its own actor.
        checkpoint_interval_ms: wall time between two checkpoint barriers (0: no
            checkpoints, so no restart from one).
        checkpoint_dir: where checkpoints go, one folder per run id (relative to the cwd;
            on a cluster, a directory every node can write).
        max_restarts: how often the graph is redeployed from its last checkpoint after an
            actor dies, before the run fails (``graph/driver.py``).
        job_database_url: record the run in ``job_runs`` there (default: a source's
            ``job_database_url`` param, if any).
        placement: where Ray puts the node actors: ``default`` (Ray's default: pack onto
            nodes with free resources, the driver's node first) or ``spread``
            (round-robin over the cluster's nodes, so the shards of a keyed node run on
            different machines; ``graph/build.py``).
    """

    model_config = ConfigDict(extra="forbid")

    max_in_flight: int = Field(default=8, ge=1, le=1024)
    pump_events: int = Field(default=8, ge=1, le=4096)
    chain: bool = True
    checkpoint_interval_ms: int = Field(default=10_000, ge=0)
    checkpoint_dir: str = Field(default="out/checkpoints", validate_default=True)
    max_restarts: int = Field(default=3, ge=0, le=100)
    job_database_url: str | None = None
    placement: Literal["default", "spread"] = "default"

    @field_validator("checkpoint_dir")
    @classmethod
    def _absolute_dir(cls, value: str) -> str:
        """Pin a relative directory to the cwd where the graph is loaded (the driver's)."""
        problem = output_dir_problem(Path(value).expanduser().resolve())
        if problem is not None:
            raise ValueError(problem)
        return str(Path(value).expanduser().resolve())

    @field_validator("job_database_url")
    @classmethod
    def _job_url(cls, value: str | None) -> str | None:
        return None if value is None else writable_store_url(value)


class EventTimeSettings(BaseModel):
    """Event-time rules for a whole graph (every operator sees them in its context).

    Attributes:
        allowed_lateness_ms: how far behind the newest tick a tick may arrive and still
            be on time; sources emit watermark = max event time seen - this.
        late_policy: what happens to a tick older than the watermark (a late tick):
            ``drop`` (kept in ``quarantine`` with reason ``late``, counted) or ``amend``
            (applied; a confirmed bar it touches is corrected and re-emitted).
        idle_timeout_ms: live: after this much wall time without ticks the watermark
            follows the wall clock, so quiet symbols still confirm; null disables.
        forming_interval_ms: at most one ``forming`` update per bar per this much
            event time (0: one per watermark).
        amend_window_ms: late policy ``amend``: how long (event time behind the watermark)
            a confirmed bar can still be corrected; the bar engines keep their confirmed
            bars, the normalizer its de-duplication keys and the parity tracker its open
            rows that long (one setting for all of them).
        earliest, latest: the plausible event times ``[earliest, latest)`` (ISO-8601 with
            offset or int ns UTC; default 1990-01-01 to 2100-01-01 UTC). The normalizer
            quarantines ticks outside as ``bad_timestamp`` (naming the likely unit
            mistake), and no source lets them move a watermark (``graph/times.py``).
    """

    model_config = ConfigDict(extra="forbid")

    allowed_lateness_ms: int = Field(default=0, ge=0)
    late_policy: Literal["drop", "amend"] = "drop"
    idle_timeout_ms: int | None = Field(default=5_000, ge=1)
    forming_interval_ms: int = Field(default=0, ge=0)
    amend_window_ms: int = Field(default=3_600_000, gt=0)
    earliest: int = DEFAULT_EARLIEST_NS
    latest: int = DEFAULT_LATEST_NS

    @field_validator("earliest", "latest", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> int:
        return parse_time_ns(value)

    @model_validator(mode="after")
    def _range(self) -> EventTimeSettings:
        EventTimeRange(self.earliest, self.latest)  # raises ValueError when empty
        return self


class GraphSpec(BaseModel):
    """A whole graph file (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "graph"
    description: str = ""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    event_time: EventTimeSettings = Field(default_factory=EventTimeSettings)
    nodes: list[NodeSpec] = Field(min_length=1)

    def node(self, node_id: str) -> NodeSpec:
        """The node with ``node_id``; KeyError if absent."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


@dataclass(frozen=True)
class LoadedGraph:
    """A validated graph, ready to build.

    Attributes:
        path: the graph file.
        spec: the validated spec (params are plain data, env already substituted).
        order: node ids in topological order (sources first).
        edges: ``{node_id: [(upstream_id, stream), ...]}``.
    """

    path: Path
    spec: GraphSpec
    order: tuple[str, ...]
    edges: dict[str, list[tuple[str, str]]]

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in params resolve against."""
        return self.path.parent


def yaml_path(loc: Sequence[str | int]) -> str:
    """Render a pydantic ``loc`` tuple as a YAML path: ``('nodes', 2, 'id')`` -> ``nodes[2].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _pydantic_problems(err: ValidationError, prefix: Sequence[str | int] = ()) -> list[str]:
    problems = []
    for item in err.errors(include_url=False, include_input=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # Tagged unions add the tag as a loc element; keep it: it tells which variant failed.
        msg = item["msg"].removeprefix("Value error, ")
        problems.append(f"{yaml_path([*prefix, *loc])}: {msg}")
    return problems


def resolve_graph_path(name_or_path: str) -> Path:
    """A path as given if it exists, else ``config/<name>`` (``.yaml`` added if missing).

    Raises:
        GraphError: neither exists.
    """
    given = Path(name_or_path)
    candidates = [given]
    if not given.is_absolute() and len(given.parts) == 1:
        candidates.append(CONFIG_DIR / given)
        if given.suffix not in (".yaml", ".yml"):
            candidates.append(CONFIG_DIR / f"{given}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise GraphError(name_or_path, [f"graph file not found (looked in: {', '.join(str(c) for c in candidates)})"])


def _interpolate(value: Any, env: Mapping[str, str], loc: list[str | int], problems: list[str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{yaml_path(loc)}: environment variable {name} is not set (use ${{{name}:-default}})")
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, [*loc, k], problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, [*loc, i], problems) for i, v in enumerate(value)]
    return value


def parse_override(text: str) -> tuple[str, list[str], Any]:
    """Parse ``NODE.KEY=VALUE`` from ``--set``.

    ``KEY`` is a node field (``parallelism``, ``key``, ``kind``, ``inputs``) or a
    param; ``params.`` may be written explicitly, and dotted keys reach nested params
    (``source.params.url=ws://...``). ``runtime.KEY`` and ``event_time.KEY`` set the
    graph's own settings (``runtime.checkpoint_interval_ms=1000``). ``VALUE`` is parsed
    as a YAML scalar/flow value, so ``2`` is an int and ``[1m,5m]`` a list.

    Returns:
        ``(node_id, path_within_node, value)``, e.g. ``("bars", ["parallelism"], 2)``.

    Raises:
        ValueError: not of the form ``NODE.KEY=VALUE``.
    """
    target, sep, raw = text.partition("=")
    parts = target.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ValueError(f"--set {text!r}: expected NODE.KEY=VALUE (e.g. bars.parallelism=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node_id, path = parts[0], parts[1:]
    if node_id in _GRAPH_SETTINGS:
        return node_id, path, value
    if path[0] not in NodeSpec.model_fields or path[0] == "id":
        path = ["params", *path]
    return node_id, path, value


#: ``--set`` targets that are graph settings rather than nodes.
_GRAPH_SETTINGS = ("runtime", "event_time")


def _apply_overrides(doc: Any, overrides: Sequence[str], problems: list[str]) -> None:
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    for text in overrides:
        try:
            node_id, path, value = parse_override(text)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if node_id in _GRAPH_SETTINGS:
            if not isinstance(doc.get(node_id), dict):
                doc[node_id] = {}
            cursor = doc[node_id]
            for key in path[:-1]:
                cursor = cursor.setdefault(key, {})
            cursor[path[-1]] = value
            continue
        matches = [n for n in nodes or [] if isinstance(n, dict) and n.get("id") == node_id]
        if not matches:
            problems.append(f"--set {text!r}: no node with id {node_id!r}")
            continue
        cursor = matches[0]
        for key in path[:-1]:
            if not isinstance(cursor.get(key), dict):
                cursor[key] = {}
            cursor = cursor[key]
        cursor[path[-1]] = value


def load_graph(
    name_or_path: str | Path,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> LoadedGraph:
    """Read, interpolate, override and validate a graph file; start nothing.

    Args:
        name_or_path: a path, or a bare name looked up in ``config/``.
        overrides: ``--set NODE.KEY=VALUE`` strings, applied after interpolation.
        env: environment for ``${VAR}`` (default ``os.environ``).

    Returns:
        The validated :class:`LoadedGraph`.

    Raises:
        GraphError: every problem found, each with its YAML path (YAML syntax errors
            with line and column; unknown kind; unknown input node or stream; cycle;
            bad params such as a bad timeframe or a missing file).
    """
    path = resolve_graph_path(str(name_or_path))
    source = _display(path)
    doc = _read_yaml(path, source)
    if not isinstance(doc, dict):
        raise GraphError(source, ["<root>: a graph file must be a mapping with a 'nodes' list"])
    problems: list[str] = []
    doc = _interpolate(doc, os.environ if env is None else env, [], problems)
    _apply_overrides(doc, overrides, problems)
    if problems:
        raise GraphError(source, problems)
    try:
        spec = GraphSpec.model_validate(doc)
    except ValidationError as exc:
        raise GraphError(source, _pydantic_problems(exc)) from None
    loaded = _check_graph(spec, path, problems)
    if problems:
        raise GraphError(source, problems)
    return loaded


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key repeated in one mapping is an error (PyYAML keeps the
    last silently, and validation then blamed some other field)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if first is not None:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first at line {first.line + 1}); each key may appear once in a mapping",
                    mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, source: str) -> Any:
    """Parse a graph file strictly: UTF-8 text, YAML, no repeated keys.

    Raises:
        GraphError: the file is not UTF-8 (line, column and the byte), not YAML, or
            repeats a key (line, column, key).
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise GraphError(
            source, [f"line {line}, column {column}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"]
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise GraphError(source, [f"{where}invalid YAML: {printable(problem)}"]) from None


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_graph(spec: GraphSpec, path: Path, problems: list[str]) -> LoadedGraph:
    index = {}
    for i, node in enumerate(spec.nodes):
        if node.id in index:
            problems.append(f"nodes[{i}].id: duplicate node id {node.id!r} (first at nodes[{index[node.id]}])")
        else:
            index[node.id] = i

    classes: dict[str, Any] = {}
    validated_params: dict[str, dict[str, Any]] = {}
    for i, node in enumerate(spec.nodes):
        if node.kind not in KINDS:
            problems.append(f"nodes[{i}].kind: unknown kind {node.kind!r} (known: {', '.join(sorted(KINDS))})")
            continue
        cls = load_kind(node.kind)
        classes[node.id] = cls
        try:
            model = cls.Params.model_validate(node.params, context={"base_dir": path.parent})
            validated_params[node.id] = model.model_dump(mode="json", exclude_unset=False)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, ("nodes", i, "params")))
        is_source = issubclass(cls, Source)
        if is_source and node.inputs:
            problems.append(f"nodes[{i}].inputs: a {node.kind} node is a source and takes no inputs")
        if not is_source and not node.inputs:
            problems.append(f"nodes[{i}].inputs: a {node.kind} node needs at least one input")
        if is_source and node.parallelism != 1 and not getattr(cls, "shardable", False):
            problems.append(f"nodes[{i}].parallelism: a {node.kind} source runs as one actor (got {node.parallelism})")
        if node.parallelism > 1 and node.key is None and getattr(cls, "keyed", False):
            problems.append(f"nodes[{i}].key: a {node.kind} node with parallelism > 1 needs a key (e.g. symbol)")

    edges: dict[str, list[tuple[str, str]]] = {node.id: [] for node in spec.nodes}
    for i, node in enumerate(spec.nodes):
        for j, ref in enumerate(node.inputs):
            upstream, _, stream = ref.partition(".")
            where = f"nodes[{i}].inputs[{j}]"
            if upstream not in index:
                problems.append(f"{where}: unknown input node {upstream!r}")
                continue
            if upstream == node.id:
                problems.append(f"{where}: node {node.id!r} cannot read its own output (cycle)")
                continue
            up_cls = classes.get(upstream)
            if up_cls is None:
                continue
            outputs = list(up_cls.outputs)
            if not outputs:
                problems.append(f"{where}: node {upstream!r} ({spec.nodes[index[upstream]].kind}) has no outputs")
                continue
            stream = stream or outputs[0]
            if stream not in up_cls.outputs:
                problems.append(f"{where}: node {upstream!r} has no output stream {stream!r} (has: {', '.join(outputs)})")
                continue
            if node.key is not None and node.key not in up_cls.outputs[stream].names:
                problems.append(
                    f"nodes[{i}].key: {node.key!r} is not a column of {upstream}.{stream} "
                    f"(columns: {', '.join(up_cls.outputs[stream].names)})"
                )
            edges[node.id].append((upstream, stream))

    order = _topological_order(spec, edges, problems)
    nodes = [
        node.model_copy(update={"params": validated_params.get(node.id, node.params)}) for node in spec.nodes
    ]
    return LoadedGraph(path=path, spec=spec.model_copy(update={"nodes": nodes}), order=order, edges=edges)


def _topological_order(spec: GraphSpec, edges: dict[str, list[tuple[str, str]]], problems: list[str]) -> tuple[str, ...]:
    indegree = {node.id: len({u for u, _ in edges.get(node.id, [])}) for node in spec.nodes}
    downstream: dict[str, set[str]] = {node.id: set() for node in spec.nodes}
    for node_id, ins in edges.items():
        for upstream, _ in ins:
            downstream.setdefault(upstream, set()).add(node_id)
    ready = [n.id for n in spec.nodes if indegree[n.id] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for nxt in sorted(downstream.get(current, ())):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) < len(spec.nodes):
        stuck = [n.id for n in spec.nodes if n.id not in order]
        problems.append(f"nodes: the inputs form a cycle through {', '.join(stuck)}")
    return tuple(order)
