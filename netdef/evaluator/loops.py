"""TensorRT loops (ILoop): trip limits, recurrences, iterators and loop outputs around a body.

TensorRT does not record which layers form a loop's body; they are the layers that depend on the
loop's recurrence or iterator outputs. The evaluator replaces each loop (its boundary layers and
body) with one node that reads the loop's outside tensors and produces its loop outputs, so the
network is acyclic again; running that node iterates the body.
"""
from __future__ import annotations

from collections import ChainMap

import numpy as np

from .core import EvaluationError, UnsupportedLayerError

BOUNDARY = ("TRIP_LIMIT", "RECURRENCE", "ITERATOR", "LOOP_OUTPUT")


def _enum(value) -> str:
    return str(value).split(".")[-1]


class LoopNode:
    """One loop as a single node of the walk (duck-types core._Node: layer, kind, reads, outputs)."""

    kind = "LOOP"

    def __init__(self, name: str, boundary: list, body: list):
        self.name = name
        self.layer = boundary[0].layer  # named in errors
        self.boundary = boundary
        self.trip_limits = [n for n in boundary if n.kind == "TRIP_LIMIT"]
        self.recurrences = [n for n in boundary if n.kind == "RECURRENCE"]
        self.iterators = [n for n in boundary if n.kind == "ITERATOR"]
        self.loop_outputs = [n for n in boundary if n.kind == "LOOP_OUTPUT"]
        self.body = body
        inside = {o[0] for n in body + self.recurrences + self.iterators for o in n.outputs}
        reads = []
        for n in body + boundary:
            for i, t in enumerate(n.reads):
                if t is None or t in inside:
                    continue
                reads.append(t)
        self.reads = list(dict.fromkeys(reads))
        self.outputs = [o for n in self.loop_outputs for o in n.outputs]
        self.inside = inside

    def run(self, values, run_node) -> dict:
        """Iterate the body; `run_node(node, values)` computes one node into `values`."""
        from .core import topological_order

        seeds = {o[0] for n in self.recurrences + self.iterators for o in n.outputs}
        order = topological_order(self.body, seeds | set(values))
        limit = None
        conditions = []
        for n in self.trip_limits:
            kind = _enum(n.layer.kind)
            if kind == "COUNT":
                count = int(np.asarray(values[n.reads[0]]).reshape(()))
                limit = count if limit is None else min(limit, count)
            elif kind == "WHILE":
                conditions.append(n.reads[0])
            else:
                raise UnsupportedLayerError(n.layer, f"trip limit kind {kind}")
        for n in self.iterators:  # an iterator also bounds the trip count by its extent
            extent = np.asarray(values[n.reads[0]]).shape[int(n.layer.axis)]
            limit = extent if limit is None else min(limit, extent)
        if limit is None and not conditions:
            raise EvaluationError(f"loop '{self.name}': no trip limit")
        state = {n.outputs[0][0]: values[n.reads[0]] for n in self.recurrences}
        collected = {n.outputs[0][0]: [] for n in self.loop_outputs}
        last = {}
        step = 0
        while limit is None or step < limit:
            local = ChainMap(dict(state), values)
            for n in self.iterators:
                source = np.asarray(values[n.reads[0]])
                axis = int(n.layer.axis)
                index = source.shape[axis] - 1 - step if n.layer.reverse else step
                local[n.outputs[0][0]] = np.take(source, index, axis=axis)
            for node in order:
                run_node(node, local)
            # a WHILE condition is the value at the start of the iteration (from the state or
            # computed by the body from it): when false, this iteration does not happen
            if any(not bool(np.asarray(local[c]).reshape(())) for c in conditions):
                break
            for n in self.loop_outputs:
                value = local[n.reads[0]]
                last[n.outputs[0][0]] = value
                collected[n.outputs[0][0]].append(value)
            state = {n.outputs[0][0]: local[n.reads[1]] for n in self.recurrences}
            step += 1
        results = {}
        for n in self.loop_outputs:
            name = n.outputs[0][0]
            kind = _enum(n.layer.kind)
            if kind == "LAST_VALUE":
                if n.reads[0] in state:  # a recurrence's last value is its state after the loop
                    results[name] = state[n.reads[0]]
                elif name in last:
                    results[name] = last[name]
                else:
                    raise EvaluationError(f"loop '{self.name}': LAST_VALUE of '{n.reads[0]}' after zero iterations")
                continue
            items = collected[name][::-1] if kind == "REVERSE" else collected[name]
            axis = int(n.layer.axis)
            if kind not in ("CONCATENATE", "REVERSE"):
                raise UnsupportedLayerError(n.layer, f"loop output kind {kind}")
            stacked = np.stack(items, axis=axis) if items else None
            length = int(np.asarray(values[n.reads[1]]).reshape(())) if len(n.reads) > 1 and n.reads[1] else len(items)
            if stacked is None or stacked.shape[axis] < length:  # fewer iterations than the declared length
                template = np.asarray(local[n.reads[0]]) if stacked is None else stacked
                shape = list(template.shape) if stacked is not None else list(template.shape[:axis]) + [0] + list(template.shape[axis:])
                pad = length - shape[axis]
                shape[axis] = pad
                zeros = np.zeros(shape, dtype=template.dtype)
                stacked = zeros if stacked is None else np.concatenate([stacked, zeros], axis=axis)
            results[name] = stacked
        return results


def group_loops(nodes: list) -> list:
    """Replace each loop's boundary and body nodes with one LoopNode (at the place of its first node)."""
    loops: dict[str, list] = {}
    for n in nodes:
        if n.kind in BOUNDARY:
            loops.setdefault(n.layer.loop.name, []).append(n)
    if not loops:
        return nodes
    member: dict[int, str] = {}
    bodies: dict[str, list] = {}
    for name, boundary in loops.items():
        seeds = {o[0] for n in boundary if n.kind in ("RECURRENCE", "ITERATOR") for o in n.outputs}
        body, produced = [], set(seeds)
        changed = True
        while changed:  # the body: every layer that depends on the loop's recurrences or iterators
            changed = False
            for n in nodes:
                if id(n) in member or n.kind in BOUNDARY or n in body:
                    continue
                if any(t in produced for t in n.reads if t is not None):
                    body.append(n)
                    produced.update(o[0] for o in n.outputs)
                    changed = True
        for n in body + boundary:
            member[id(n)] = name
        bodies[name] = body
        inner = [n for n in nodes if n.kind in BOUNDARY and n.layer.loop.name != name
                 and any(t in produced for t in n.reads if t is not None)]
        if inner:
            raise UnsupportedLayerError(inner[0].layer, "a loop nested in another loop")
    grouped, placed = [], set()
    for n in nodes:
        name = member.get(id(n))
        if name is None:
            grouped.append(n)
        elif name not in placed:
            placed.add(name)
            body_ids = {id(b) for b in bodies[name]}
            grouped.append(LoopNode(name, loops[name], [b for b in nodes if id(b) in body_ids]))
    return grouped
