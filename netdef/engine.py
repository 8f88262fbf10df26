"""Turning a network definition into a plan file, and the manifest that describes it.

Shared by the netdef builds and the parser baseline, so both get the same profiles, progress output,
atomic writes and manifest fields. A plan is written to a temporary file and renamed, so a failed or
interrupted build never leaves a half-written plan behind.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .backend import BACKEND_NAME, VERSION, trt
from .files import atomic_write_bytes, atomic_write_json, sha256_file  # noqa: F401 - re-exported

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "wenet-trt-manifest/1"

# A shape range per input: name -> (min, opt, max), each a tuple of ints.
ShapeRanges = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class BuildError(RuntimeError):
    """The builder refused the network; the message says which network and why."""


class ProgressPrinter(trt.IProgressMonitor):
    """TensorRT's progress monitor: prints each build phase as it starts and ends (to stderr)."""

    def __init__(self, label: str, stream=None):
        trt.IProgressMonitor.__init__(self)
        self.label = label
        self.stream = stream or sys.stderr
        self._depth: dict[str, int] = {}
        self._start: dict[str, float] = {}

    def phase_start(self, phase_name, parent_phase, num_steps):
        depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
        self._depth[phase_name] = depth
        self._start[phase_name] = time.perf_counter()
        if depth <= 1:
            print(f"[{self.label}] {'  ' * depth}{phase_name} ({num_steps} steps)", file=self.stream, flush=True)

    def step_complete(self, phase_name, step):
        return True  # never cancel

    def phase_finish(self, phase_name):
        depth = self._depth.pop(phase_name, 0)
        elapsed = time.perf_counter() - self._start.pop(phase_name, time.perf_counter())
        if depth == 0:
            print(f"[{self.label}] {phase_name} done in {elapsed:.1f} s", file=self.stream, flush=True)


@dataclass
class PlanInfo:
    """What the manifest records of one built plan."""

    network: str
    plan: str
    plan_bytes: int
    plan_sha256: str
    build_s: float
    layers: int
    profiles: list[dict[str, list[list[int]]]]
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


def _io_description(network, is_input: bool) -> dict[str, dict]:
    count = network.num_inputs if is_input else network.num_outputs
    getter = network.get_input if is_input else network.get_output
    out = {}
    for i in range(count):
        t = getter(i)
        out[t.name] = {"dtype": str(t.dtype).split(".")[-1].lower(), "shape": list(t.shape)}
    return out


def check_shape_ranges(network_name: str, ranges: ShapeRanges) -> None:
    """Each bound is a full shape and min <= opt <= max in every dimension; say which input if not."""
    for name, (lo, opt, hi) in ranges.items():
        if not (len(lo) == len(opt) == len(hi)):
            raise ValueError(f"{network_name}: profile for input '{name}' has bounds of different ranks: {lo}, {opt}, {hi}")
        for d, (a, b, c) in enumerate(zip(lo, opt, hi)):
            if not (1 <= a <= b <= c):
                raise ValueError(
                    f"{network_name}: profile for input '{name}' dimension {d} needs 1 <= min <= opt <= max, "
                    f"got min {a}, opt {b}, max {c}"
                )


def build_plan(
    builder,
    network,
    network_name: str,
    ranges: ShapeRanges,
    out_path: Path,
    *,
    shape_tensor_ranges: ShapeRanges | None = None,
    workspace_bytes: int | None = None,
    extra: dict | None = None,
    quiet: bool = False,
) -> PlanInfo:
    """Build `network` with one optimization profile and write the plan atomically to `out_path`."""
    check_shape_ranges(network_name, ranges)
    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not quiet:
        config.progress_monitor = ProgressPrinter(network_name)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in ranges.items():
        profile.set_shape(name, lo, opt, hi)
    for name, (lo, opt, hi) in (shape_tensor_ranges or {}).items():
        profile.set_shape_input(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if serialized is None:
        raise BuildError(f"{network_name}: {BACKEND_NAME} {VERSION} could not build the network (see the builder's log above)")
    data = memoryview(serialized)
    atomic_write_bytes(out_path, data)
    return PlanInfo(
        network=network_name,
        plan=Path(out_path).name,
        plan_bytes=len(data),
        plan_sha256=hashlib.sha256(data).hexdigest(),
        build_s=round(build_s, 3),
        layers=network.num_layers,
        profiles=[{k: [list(v[0]), list(v[1]), list(v[2])] for k, v in ranges.items()}],
        inputs=_io_description(network, True),
        outputs=_io_description(network, False),
        extra=dict(extra or {}),
    )


def write_manifest(out_dir: Path, *, kind: str, precision: str, plans: list[PlanInfo], sources: dict, extra: dict | None = None) -> Path:
    """EDIR/manifest.json: the backend that built the plans, what they were built from, and each plan."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,  # "netdef" or "parser"
        "backend": BACKEND_NAME,
        "backend_version": VERSION,
        "precision": precision,
        "sources": sources,  # file name -> {"path", "sha256"}: weights + config, or the ONNX files
        "engines": {p.network: p.to_json() for p in plans},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest.update(extra or {})
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_json(path, manifest)
    return path


def source_entry(path: str | os.PathLike) -> dict:
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": sha256_file(path)}
