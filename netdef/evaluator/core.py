"""Walk a TensorRT network definition layer by layer and compute every tensor with NumPy.

Each layer is downcast to its interface class (as Polygraphy does) so its attributes can be read
through the TensorRT Python API; the layer's NumPy implementation (layers.py) computes its outputs
from its inputs' values, and the result is stored in the output tensor's declared data type. That
store is where FP16 rounding happens: a layer computes in float32 and its FP16 output is rounded
to float16, as TensorRT's kernels accumulate in FP32 and write FP16.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..backend import trt
from .dtypes import np_dtype, to_dtype, trt_type_name


class UnsupportedLayerError(NotImplementedError):
    """A layer type, mode, attribute or data type the evaluator does not implement."""

    def __init__(self, layer, what: str):
        self.layer_name = layer.name
        self.layer_type = layer_type_name(layer)
        super().__init__(f"layer '{layer.name}' ({self.layer_type}): {what} is not supported by the evaluator")


class EvaluationError(RuntimeError):
    """The network cannot be evaluated on these inputs (bad input, failed assertion, out-of-bounds...)."""


def layer_type_name(layer) -> str:
    """LayerType name; read through ILayer because IActivationLayer/IPoolingLayer shadow `type`."""
    return str(trt.ILayer.type.__get__(layer)).split(".")[-1]


# LayerType -> interface class, the downcast Polygraphy does so that type-specific attributes exist.
_LAYER_CLASSES = {
    "ACTIVATION": "IActivationLayer", "ASSERTION": "IAssertionLayer", "ATTENTION_INPUT": "IAttentionInputLayer",
    "ATTENTION_OUTPUT": "IAttentionOutputLayer", "CAST": "ICastLayer", "CONCATENATION": "IConcatenationLayer",
    "CONDITION": "IConditionLayer", "CONDITIONAL_INPUT": "IIfConditionalInputLayer",
    "CONDITIONAL_OUTPUT": "IIfConditionalOutputLayer", "CONSTANT": "IConstantLayer",
    "CONVOLUTION": "IConvolutionLayer", "CUMULATIVE": "ICumulativeLayer", "DECONVOLUTION": "IDeconvolutionLayer",
    "DEQUANTIZE": "IDequantizeLayer", "EINSUM": "IEinsumLayer", "ELEMENTWISE": "IElementWiseLayer",
    "FILL": "IFillLayer", "GATHER": "IGatherLayer", "GRID_SAMPLE": "IGridSampleLayer", "IDENTITY": "IIdentityLayer",
    "ITERATOR": "IIteratorLayer", "LOOP_OUTPUT": "ILoopOutputLayer", "LRN": "ILRNLayer",
    "MATRIX_MULTIPLY": "IMatrixMultiplyLayer", "NMS": "INMSLayer", "NON_ZERO": "INonZeroLayer",
    "NORMALIZATION": "INormalizationLayer", "ONE_HOT": "IOneHotLayer", "PADDING": "IPaddingLayer",
    "PARAMETRIC_RELU": "IParametricReLULayer", "PLUGIN_V2": "IPluginV2Layer", "PLUGIN_V3": "IPluginV3Layer",
    "POOLING": "IPoolingLayer", "QUANTIZE": "IQuantizeLayer", "RAGGED_SOFTMAX": "IRaggedSoftMaxLayer",
    "RECURRENCE": "IRecurrenceLayer", "REDUCE": "IReduceLayer", "RESIZE": "IResizeLayer",
    "REVERSE_SEQUENCE": "IReverseSequenceLayer", "SCALE": "IScaleLayer", "SCATTER": "IScatterLayer",
    "SELECT": "ISelectLayer", "SHAPE": "IShapeLayer", "SHUFFLE": "IShuffleLayer", "SLICE": "ISliceLayer",
    "SOFTMAX": "ISoftMaxLayer", "SQUEEZE": "ISqueezeLayer", "TOPK": "ITopKLayer", "TRIP_LIMIT": "ITripLimitLayer",
    "UNSQUEEZE": "IUnsqueezeLayer", "UNARY": "IUnaryLayer", "ROTARY_EMBEDDING": "IRotaryEmbeddingLayer",
    "KV_CACHE_UPDATE": "IKVCacheUpdateLayer",
}


def downcast(layer, kind: str | None = None):
    """The layer as its interface class (IShuffleLayer, ...), so its own attributes can be read."""
    cls = getattr(trt, _LAYER_CLASSES.get(kind or layer_type_name(layer), "-"), None)
    if cls is not None:
        layer.__class__ = cls
    return layer


def layer_reads(layer, kind: str | None = None) -> list:
    """The tensors a layer reads: its inputs and, for an attention's output boundary, the
    attention's own query/key/value/mask (computed there; the input boundary only marks them)."""
    tensors = [layer.get_input(j) for j in range(layer.num_inputs)]
    if (kind or layer_type_name(layer)) == "ATTENTION_OUTPUT":
        attention = layer.attention
        tensors += [attention.get_input(i) for i in range(3)] + [attention.mask]
    return tensors


@dataclass
class _Node:
    """A layer with what the walk needs of it read once: TensorRT API calls cost microseconds each
    and the aishell encoder has ~4,500 layers."""

    layer: object
    kind: str
    reads: list  # tensor names (None for an unset optional input)
    outputs: list  # (name, NumPy dtype or None, TRT type name, declared shape)

    @classmethod
    def of(cls, layer) -> "_Node":
        kind = layer_type_name(layer)
        layer = downcast(layer, kind)
        reads = [None if t is None else t.name for t in layer_reads(layer, kind)]
        outputs = []
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            outputs.append((t.name, np_dtype(t.dtype), trt_type_name(t.dtype), tuple(t.shape)))
        return cls(layer, kind, reads, outputs)


def _link_conditionals(nodes: list) -> None:
    """An if-conditional's output layer reads its condition too (from the conditional's CONDITION
    layer, matched by the conditional's name). Both branches are computed; the output picks one."""
    condition_of = {n.layer.conditional.name: n.reads[0] for n in nodes if n.kind == "CONDITION"}
    for n in nodes:
        if n.kind == "CONDITIONAL_OUTPUT":
            name = n.layer.conditional.name
            if name not in condition_of:
                raise EvaluationError(f"layer '{n.layer.name}': no CONDITION layer for conditional '{name}'")
            n.reads.append(condition_of[name])


def topological_order(nodes: list, available) -> list:
    """Nodes ordered so each runs after its inputs' producers (the ONNX parser may wire a layer's
    input with set_input after adding later layers); ties keep the network's order."""
    producer = {}
    for index, node in enumerate(nodes):
        for name, *_ in node.outputs:
            producer[name] = index
    waiting_on = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        sources = {producer[t] for t in node.reads if t is not None and t not in available and t in producer}
        waiting_on[index] = len(sources)
        for source in sources:
            readers.setdefault(source, []).append(index)
    ready = [i for i, n in enumerate(waiting_on) if n == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[index])
        for reader in readers.get(index, ()):
            waiting_on[reader] -= 1
            if waiting_on[reader] == 0:
                heapq.heappush(ready, reader)
    if len(ordered) != len(nodes):
        stuck = [nodes[i].layer.name for i, n in enumerate(waiting_on) if n > 0][:3]
        raise EvaluationError(f"the network has a cycle outside a loop (layers {stuck} never become ready)")
    return ordered


def _check_input(tensor, value) -> np.ndarray:
    name = tensor.name
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
    expected = np_dtype(tensor.dtype)
    if expected is None:
        raise EvaluationError(f"input '{name}': TensorRT type {trt_type_name(tensor.dtype)} has no NumPy equivalent")
    if value.dtype != expected:
        raise EvaluationError(f"input '{name}': expected dtype {expected.name}, got {value.dtype.name}")
    declared = tuple(tensor.shape)
    if len(declared) != value.ndim or any(d != -1 and d != v for d, v in zip(declared, value.shape)):
        raise EvaluationError(f"input '{name}': expected shape {list(declared)} (-1 is free), got {list(value.shape)}")
    return value


def _store(node: _Node, index: int, value) -> np.ndarray:
    """Convert a layer's result to its output tensor's declared type (FP16 outputs round here) and
    check it against the shape TensorRT inferred for it (-1 where only known at run time)."""
    name, dtype, type_name, declared = node.outputs[index]
    if dtype is None:
        raise UnsupportedLayerError(node.layer, f"output {index} data type {type_name}")
    value = np.asarray(value)
    if value.dtype != dtype:
        value = to_dtype(value, dtype)
    if len(declared) != value.ndim or any(d != -1 and d != v for d, v in zip(declared, value.shape)):
        raise EvaluationError(
            f"layer '{node.layer.name}' ({node.kind}): computed output '{name}' of shape "
            f"{list(value.shape)}, TensorRT declares {list(declared)}"
        )
    return value


def _run_node(node, values) -> None:
    """Compute one node's outputs from `values` into `values` (a dict, or a loop's ChainMap)."""
    from .layers import LAYER_IMPLEMENTATIONS

    layer, kind = node.layer, node.kind
    if kind == "LOOP":
        results = node.run(values, _run_node)
        for j, (name, *_) in enumerate(node.outputs):
            values[name] = _store(node, j, results[name])
        return
    args = []
    for j, name in enumerate(node.reads):
        if name is None:
            args.append(None)
            continue
        try:
            args.append(values[name])
        except KeyError:
            raise EvaluationError(f"layer '{layer.name}' ({kind}): input {j} '{name}' is produced by no layer") from None
    try:
        results = LAYER_IMPLEMENTATIONS[kind](layer, args)
    except (UnsupportedLayerError, EvaluationError):
        raise
    except Exception as exc:
        raise EvaluationError(f"layer '{layer.name}' ({kind}): {type(exc).__name__}: {exc}") from exc
    if len(results) != len(node.outputs):
        raise EvaluationError(f"layer '{layer.name}' ({kind}): computed {len(results)} outputs, expected {len(node.outputs)}")
    for j, result in enumerate(results):
        values[node.outputs[j][0]] = _store(node, j, result)


def evaluate(network, inputs: dict[str, np.ndarray], *, return_all: bool = False) -> dict[str, np.ndarray]:
    """Compute `network`'s outputs (every named tensor when `return_all`) from `inputs` by tensor name."""
    from .layers import LAYER_IMPLEMENTATIONS  # layers imports core for the error classes

    nodes = [_Node.of(network.get_layer(i)) for i in range(network.num_layers)]
    from .loops import BOUNDARY, group_loops

    for node in nodes:  # before anything runs
        if node.kind not in LAYER_IMPLEMENTATIONS and node.kind not in BOUNDARY:
            raise UnsupportedLayerError(node.layer, f"layer type {node.kind}")
    _link_conditionals(nodes)
    nodes = group_loops(nodes)  # a loop becomes one node: the network is acyclic again
    values: dict[str, np.ndarray] = {}
    declared_inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    missing = sorted(set(declared_inputs) - set(inputs))
    if missing:
        raise EvaluationError(f"missing network input(s) {missing}; the network's inputs are {sorted(declared_inputs)}")
    unknown = sorted(set(inputs) - set(declared_inputs))
    if unknown:
        raise EvaluationError(f"unknown input(s) {unknown}; the network's inputs are {sorted(declared_inputs)}")
    for name, tensor in declared_inputs.items():
        values[name] = _check_input(tensor, inputs[name])

    output_names = [network.get_output(i).name for i in range(network.num_outputs)]
    nodes = topological_order(nodes, values)
    # Without return_all, free each intermediate after its last reader: the aishell encoder has
    # thousands of tensors, most of them large activations.
    last_use: dict[str, int] = {}
    if not return_all:
        for index, node in enumerate(nodes):
            for t in node.reads:
                if t is not None:
                    last_use[t] = index
        for name in output_names:
            last_use[name] = len(nodes)

    for index, node in enumerate(nodes):
        _run_node(node, values)
        if not return_all:
            for name in node.reads:
                if name is not None and last_use.get(name, -1) <= index and name not in declared_inputs:
                    values.pop(name, None)

    missing_outputs = [name for name in output_names if name not in values]
    if missing_outputs:
        raise EvaluationError(f"network output(s) {missing_outputs} are not produced by any layer")
    if return_all:
        return values
    # an output may be a view (of an input, or of a larger intermediate): hand back its own array
    return {name: values[name].copy() if values[name].base is not None else values[name] for name in output_names}
