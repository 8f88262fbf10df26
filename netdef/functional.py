"""A small functional layer over INetworkDefinition, so that model code reads as math.

The idea is TensorRT-LLM's `functional.py`: a module-level current network, a `Tensor` wrapper with
arithmetic operators, and one short function per operation. Every layer gets a name from the current
scope (`encoder.encoders.3.self_attn.scores`), which is what the precision policy matches, what build
logs and the CPU evaluator report, and what a user greps for in an engine inspector.

Precision: networks are strongly typed. Each scope has a compute dtype from the precision policy
(`netdef.precision`); `constant()` creates float weights in that dtype and `to_compute()` casts an
activation into it, so an FP32 island is a scope whose policy entry says fp32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .backend import np_dtype, trt

FLOAT_TYPES = {"fp32": trt.float32, "fp16": trt.float16}


@dataclass
class _Context:
    network: object
    policy: object  # netdef.precision.PrecisionPolicy: .dtype_for(scope_name) -> "fp32" | "fp16"
    scopes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    keepalive: list[np.ndarray] = field(default_factory=list)  # host arrays TensorRT points at until build
    casts: dict[tuple, "Tensor"] = field(default_factory=dict)  # (tensor name, dtype) -> cast: one cast per pair
    plugins: frozenset = frozenset()  # which plugin layers replace native ones: {"layernorm", "attention"}
    constants: dict[tuple, "Tensor"] = field(default_factory=dict)  # shared small constants


_stack: list[_Context] = []


def current() -> _Context:
    if not _stack:
        raise RuntimeError("no network under construction: use `with functional.building(network, policy):`")
    return _stack[-1]


@contextlib.contextmanager
def building(network, policy, plugins=()) -> Iterator[_Context]:
    """Make `network` the target of every function here until the block ends."""
    ctx = _Context(network, policy, plugins=frozenset(plugins))
    _stack.append(ctx)
    try:
        yield ctx
    finally:
        _stack.pop()


@contextlib.contextmanager
def scope(name: str) -> Iterator[str]:
    """Name scope: layers created inside are named `<outer>.<name>.<op>`."""
    ctx = current()
    ctx.scopes.append(name)
    try:
        yield scope_name()
    finally:
        ctx.scopes.pop()


def scope_name() -> str:
    return ".".join(current().scopes)


def uses_plugin(kind: str) -> bool:
    """Whether this build swaps the native layers of `kind` ("layernorm", "attention") for a plugin layer."""
    return kind in current().plugins


def compute_dtype():
    """The TensorRT float type the precision policy gives the current scope."""
    ctx = current()
    return FLOAT_TYPES[ctx.policy.dtype_for(scope_name())]


def _name(layer, op: str):
    ctx = current()
    base = f"{scope_name()}.{op}" if ctx.scopes else op
    n = ctx.counts.get(base, 0)
    ctx.counts[base] = n + 1
    layer.name = base if n == 0 else f"{base}_{n}"
    for i in range(layer.num_outputs):
        layer.get_output(i).name = layer.name if layer.num_outputs == 1 else f"{layer.name}:{i}"
    return layer


def _out(layer, op: str, index: int = 0) -> "Tensor":
    _name(layer, op)
    return Tensor(layer.get_output(index))


class Tensor:
    """An ITensor with arithmetic operators; scalars and NumPy arrays become constants of its dtype."""

    __array_priority__ = 1000  # so `np_array * tensor` uses Tensor.__rmul__

    def __init__(self, itensor):
        self.trt = itensor

    @property
    def dtype(self):
        return self.trt.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.trt.shape)

    @property
    def ndim(self) -> int:
        return len(self.trt.shape)

    def _binary(self, other, op, reverse=False):
        other = as_tensor(other, like=self)
        a, b = (other, self) if reverse else (self, other)
        return elementwise(a, b, op)

    def __add__(self, o):
        return self._binary(o, trt.ElementWiseOperation.SUM)

    def __radd__(self, o):
        return self._binary(o, trt.ElementWiseOperation.SUM, True)

    def __sub__(self, o):
        return self._binary(o, trt.ElementWiseOperation.SUB)

    def __rsub__(self, o):
        return self._binary(o, trt.ElementWiseOperation.SUB, True)

    def __mul__(self, o):
        return self._binary(o, trt.ElementWiseOperation.PROD)

    def __rmul__(self, o):
        return self._binary(o, trt.ElementWiseOperation.PROD, True)

    def __truediv__(self, o):
        return self._binary(o, trt.ElementWiseOperation.DIV)

    def __lt__(self, o):
        return self._binary(o, trt.ElementWiseOperation.LESS)

    def __matmul__(self, o):
        return matmul(self, o)

    def __repr__(self):
        return f"Tensor({self.trt.name!r}, {self.dtype}, {self.shape})"


ShapeLike = Sequence["int | Tensor"]


# ---- network inputs, outputs, constants ----------------------------------------------------------

def input(name: str, dtype, shape: Sequence[int]) -> Tensor:  # noqa: A001 - mirrors INetworkDefinition.add_input
    return Tensor(current().network.add_input(name, dtype, tuple(shape)))


def output(t: Tensor, name: str, dtype=None) -> Tensor:
    """Mark `t` as a network output named `name`, cast to `dtype` first if given."""
    if dtype is not None and t.dtype != dtype:
        t = cast(t, dtype)
    t = identity(t) if t.trt.is_network_input or t.trt.is_network_output else t
    t.trt.name = name
    current().network.mark_output(t.trt)
    return t


def constant(array, dtype=None, op: str = "const") -> Tensor:
    """A constant layer. Float arrays take `dtype`, else the scope's compute dtype."""
    ctx = current()
    array = np.asarray(array)
    if array.dtype.kind == "f":
        np_type = np_dtype(dtype if dtype is not None else compute_dtype())
    elif dtype is not None:
        np_type = np_dtype(dtype)
    else:
        np_type = array.dtype
    array = np.array(array, dtype=np_type, order="C")  # a copy TensorRT can point at; keeps 0-d arrays 0-d
    ctx.keepalive.append(array)
    layer = ctx.network.add_constant(array.shape if array.ndim else (), trt.Weights(array))
    return _out(layer, op)


def scalar_like(value, like: Tensor, ndim: int | None = None) -> Tensor:
    """A broadcastable constant [1]*ndim of `like`'s dtype, shared across the network."""
    ndim = like.ndim if ndim is None else ndim
    key = (float(value) if like.dtype in (trt.float32, trt.float16) else int(value), like.dtype, ndim)
    ctx = current()
    if key not in ctx.constants:
        with _root_scope():
            ctx.constants[key] = constant(np.full([1] * ndim, value, np_dtype(like.dtype)), like.dtype, op=f"scalar_{value}")
    return ctx.constants[key]


@contextlib.contextmanager
def _root_scope():
    ctx = current()
    saved, ctx.scopes = ctx.scopes, ["shared"]
    try:
        yield
    finally:
        ctx.scopes = saved


def as_tensor(value, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return scalar_like(array.item(), like)
    array = array.reshape((1,) * (like.ndim - array.ndim) + array.shape)
    return constant(array, like.dtype)


# ---- elementwise ----------------------------------------------------------------------------------

def elementwise(a: Tensor, b: Tensor, op) -> Tensor:
    layer = current().network.add_elementwise(a.trt, b.trt, op)
    return _out(layer, str(op).split(".")[-1].lower())


def maximum(a: Tensor, b) -> Tensor:
    return elementwise(a, as_tensor(b, a), trt.ElementWiseOperation.MAX)


def minimum(a: Tensor, b) -> Tensor:
    return elementwise(a, as_tensor(b, a), trt.ElementWiseOperation.MIN)


def floor_div(a: Tensor, b) -> Tensor:
    return elementwise(a, as_tensor(b, a), trt.ElementWiseOperation.FLOOR_DIV)


def logical_and(a: Tensor, b: Tensor) -> Tensor:
    return elementwise(a, b, trt.ElementWiseOperation.AND)


def unary(x: Tensor, op) -> Tensor:
    return _out(current().network.add_unary(x.trt, op), str(op).split(".")[-1].lower())


def exp(x: Tensor) -> Tensor:
    return unary(x, trt.UnaryOperation.EXP)


def log(x: Tensor) -> Tensor:
    return unary(x, trt.UnaryOperation.LOG)


def activation(x: Tensor, kind) -> Tensor:
    return _out(current().network.add_activation(x.trt, kind), str(kind).split(".")[-1].lower())


def relu(x: Tensor) -> Tensor:
    return activation(x, trt.ActivationType.RELU)


def sigmoid(x: Tensor) -> Tensor:
    return activation(x, trt.ActivationType.SIGMOID)


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x) (TensorRT has no swish activation; the builder fuses the pair)."""
    return x * sigmoid(x)


def cast(x: Tensor, dtype) -> Tensor:
    """Cast; a tensor cast twice to the same type (a mask used by every block) reuses the first cast."""
    if x.dtype == dtype:
        return x
    ctx = current()
    key = (x.trt.name, dtype)
    if key not in ctx.casts:
        ctx.casts[key] = _out(ctx.network.add_cast(x.trt, dtype), f"cast_{str(dtype).split('.')[-1].lower()}")
    return ctx.casts[key]


def to_compute(x: Tensor) -> Tensor:
    """Cast a float activation into the current scope's compute dtype (no layer when it already is)."""
    return cast(x, compute_dtype())


def where(condition: Tensor, then: Tensor, otherwise: Tensor) -> Tensor:
    return _out(current().network.add_select(condition.trt, then.trt, otherwise.trt), "where")


def identity(x: Tensor) -> Tensor:
    return _out(current().network.add_identity(x.trt), "identity")


# ---- shapes ---------------------------------------------------------------------------------------

def shape_of(x: Tensor) -> Tensor:
    """The runtime shape of `x` as a 1-D int64 shape tensor."""
    return cast(_out(current().network.add_shape(x.trt), "shape"), trt.int64)


def dim(x: Tensor, axis: int) -> Tensor:
    """One runtime dimension of `x` as a 1-element int64 shape tensor."""
    axis %= x.ndim
    return slice(shape_of(x), [axis], [1])


def shape_tensor(dims: ShapeLike) -> Tensor:
    """A 1-D int64 shape tensor from ints and 1-element shape tensors; built once per network for
    the same parts (every attention block asks for the same [B, H, T', d_k])."""
    ctx = current()
    key = ("shape",) + tuple(d.trt.name if isinstance(d, Tensor) else int(d) for d in dims)
    if key not in ctx.constants:
        with _root_scope():
            parts = [d if isinstance(d, Tensor) else constant(np.array([d], np.int64), trt.int64, op="dim") for d in dims]
            ctx.constants[key] = parts[0] if len(parts) == 1 else concat(parts, axis=0)
    return ctx.constants[key]


def _shape_arg(dims: "ShapeLike | Tensor") -> tuple[tuple[int, ...] | None, Tensor | None, int]:
    """(static dims, or a runtime shape tensor, and the rank) from ints, 1-element tensors, or a shape tensor."""
    if isinstance(dims, Tensor):
        return None, dims, dims.shape[0]
    if all(not isinstance(d, Tensor) for d in dims):
        return tuple(int(d) for d in dims), None, len(dims)
    return None, shape_tensor(dims), len(dims)


def _shuffle(x: Tensor, dims, first=None, second=None, op="reshape") -> Tensor:
    static, runtime, _ = _shape_arg(dims) if dims is not None else (None, None, 0)  # before the layer: keeps topological order
    layer = current().network.add_shuffle(x.trt)
    if first is not None:
        layer.first_transpose = tuple(first)
    if dims is not None:
        if runtime is None:
            layer.reshape_dims = static
        else:
            layer.set_input(1, runtime.trt)
    if second is not None:
        layer.second_transpose = tuple(second)
    return _out(layer, op)


def reshape(x: Tensor, dims: ShapeLike) -> Tensor:
    """Reshape; ints (0 copies the input's dimension, -1 is inferred) and runtime dims may mix."""
    return _shuffle(x, dims)


def transpose(x: Tensor, perm: Sequence[int]) -> Tensor:
    return _shuffle(x, None, first=perm, op="transpose")


def reshape_transpose(x: Tensor, dims: ShapeLike, perm: Sequence[int]) -> Tensor:
    """One shuffle layer: reshape, then transpose (TensorRT's reshape + second transpose)."""
    return _shuffle(x, dims, second=perm, op="reshape_transpose")


def transpose_reshape(x: Tensor, perm: Sequence[int], dims: ShapeLike) -> Tensor:
    """One shuffle layer: transpose, then reshape (TensorRT's first transpose + reshape)."""
    return _shuffle(x, dims, first=perm, op="transpose_reshape")


def slice(x: Tensor, start: "ShapeLike | Tensor", size: "ShapeLike | Tensor", stride: Sequence[int] | None = None) -> Tensor:  # noqa: A001
    """Slice with static or runtime start/size (stride static)."""
    start_static, start_runtime, rank = _shape_arg(start)
    size_static, size_runtime, _ = _shape_arg(size)
    layer = current().network.add_slice(
        x.trt, start_static or (0,) * rank, size_static or (1,) * rank, tuple(stride) if stride is not None else (1,) * rank
    )
    if start_runtime is not None:
        layer.set_input(1, start_runtime.trt)
    if size_runtime is not None:
        layer.set_input(2, size_runtime.trt)
    return _out(layer, "slice")


def concat(tensors: Sequence[Tensor], axis: int) -> Tensor:
    layer = current().network.add_concatenation([t.trt for t in tensors])
    layer.axis = axis % tensors[0].ndim
    return _out(layer, "concat")


def arange(length: Tensor, dtype, start: float = 0, step: float = 1) -> Tensor:
    """[start, start+step, ...] with a runtime length (a 1-element shape tensor)."""
    np_type = np_dtype(dtype)
    with _root_scope():
        alpha = constant(np.array(start, np_type), dtype, op="arange_start")
        beta = constant(np.array([step], np_type), dtype, op="arange_step")
    layer = current().network.add_fill((1,), trt.FillOperation.LINSPACE, dtype)
    layer.set_input(0, length.trt)
    layer.set_input(1, alpha.trt)
    layer.set_input(2, beta.trt)
    return _out(layer, "arange")


# ---- linear algebra, reductions, normalization ---------------------------------------------------

def matmul(a: Tensor, b: Tensor, transpose_a: bool = False, transpose_b: bool = False) -> Tensor:
    op = trt.MatrixOperation
    layer = current().network.add_matrix_multiply(
        a.trt, op.TRANSPOSE if transpose_a else op.NONE, b.trt, op.TRANSPOSE if transpose_b else op.NONE
    )
    return _out(layer, "matmul")


def linear(x: Tensor, weight: np.ndarray, bias: np.ndarray | None = None, op: str = "") -> Tensor:
    """y = x W^T + b on a 2-D activation [rows, in] (PyTorch's [out, in] weight, transposed at build time)."""
    if x.ndim != 2:
        raise ValueError(f"{scope_name()}: linear expects a 2-D [rows, features] input, got shape {x.shape}")
    x = to_compute(x)
    w = constant(np.asarray(weight).T, op=f"{op}weight" if op else "weight")
    y = matmul(x, w)
    if bias is not None:
        y = y + constant(np.asarray(bias).reshape(1, -1), op=f"{op}bias" if op else "bias")
    return y


def reduce(x: Tensor, op, axes: Sequence[int], keepdims: bool = True) -> Tensor:
    mask = 0
    for a in axes:
        mask |= 1 << (a % x.ndim)
    layer = current().network.add_reduce(x.trt, op, mask, keepdims)
    return _out(layer, f"reduce_{str(op).split('.')[-1].lower()}")


def reduce_sum(x: Tensor, axes: Sequence[int], keepdims: bool = True) -> Tensor:
    return reduce(x, trt.ReduceOperation.SUM, axes, keepdims)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    layer = current().network.add_softmax(x.trt)
    layer.axes = 1 << (axis % x.ndim)
    return _out(layer, "softmax")


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - max - log(sum(exp(x - max))): TensorRT has no log-softmax layer, and log(softmax) loses the tail."""
    shifted = x - reduce(x, trt.ReduceOperation.MAX, [axis])
    return shifted - log(reduce_sum(exp(shifted), [axis]))


def layer_norm(x: Tensor, gamma: np.ndarray, beta: np.ndarray, eps: float) -> Tensor:
    """LayerNorm over the last axis through TensorRT's normalization layer, in the scope's dtype."""
    x = to_compute(x)
    shape = [1] * (x.ndim - 1) + [-1]
    layer = current().network.add_normalization(
        x.trt,
        constant(np.asarray(gamma).reshape(shape), op="gamma").trt,
        constant(np.asarray(beta).reshape(shape), op="beta").trt,
        1 << (x.ndim - 1),
    )
    layer.epsilon = float(eps)
    return _out(layer, "layer_norm")


def conv2d(
    x: Tensor,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    groups: int = 1,
) -> Tensor:
    """2-D convolution, NCHW, PyTorch's [out, in/groups, kh, kw] weight, in the scope's dtype."""
    x = to_compute(x)
    np_type = np_dtype(compute_dtype())
    w = np.ascontiguousarray(np.asarray(weight).astype(np_type))
    b = np.ascontiguousarray(np.asarray(bias).astype(np_type)) if bias is not None else None
    current().keepalive.extend([w] + ([b] if b is not None else []))
    layer = current().network.add_convolution_nd(
        x.trt, w.shape[0], tuple(w.shape[2:]), trt.Weights(w), trt.Weights(b) if b is not None else trt.Weights(compute_dtype())
    )
    layer.stride_nd = tuple(stride)
    layer.padding_nd = tuple(padding)
    layer.num_groups = groups
    return _out(layer, "conv")


def gather(data: Tensor, indices: Tensor, axis: int = 0) -> Tensor:
    layer = current().network.add_gather(data.trt, indices.trt, axis % data.ndim)
    return _out(layer, "gather")


def gather_elements(data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """ONNX GatherElements / torch.gather: out[i][j][k] = data[i][j][indices[i][j][k]] on `axis`."""
    layer = current().network.add_gather_v2(data.trt, indices.trt, trt.GatherMode.ELEMENT)
    layer.axis = axis % data.ndim
    return _out(layer, "gather_elements")


def topk(x: Tensor, k: int, axis: int, largest: bool = True) -> tuple[Tensor, Tensor]:
    """(values, indices) of the k largest (or smallest) along `axis`; indices int32."""
    op = trt.TopKOperation.MAX if largest else trt.TopKOperation.MIN
    layer = current().network.add_topk(x.trt, op, k, 1 << (axis % x.ndim))
    _name(layer, "topk")
    return Tensor(layer.get_output(0)), Tensor(layer.get_output(1))


# ---- plugin layers (full TensorRT only: TensorRT-RTX has no add_plugin_v3) ----------------------

def layer_norm_plugin(x: Tensor, gamma: np.ndarray, beta: np.ndarray, eps: float, residual: Tensor | None = None) -> list[Tensor]:
    """WenetLayerNorm plugin: [LN(x)], or [x + residual, LN(x + residual)] fused, in the scope's dtype."""
    from plugins.trt_plugins import add_layernorm

    x = to_compute(x)
    residual = to_compute(residual) if residual is not None else None
    g, b = constant(np.asarray(gamma).reshape(-1), op="gamma"), constant(np.asarray(beta).reshape(-1), op="beta")
    outs = add_layernorm(current().network, x.trt, g.trt, b.trt, eps=float(eps), residual=residual.trt if residual is not None else None)
    return _name_plugin(outs, "layer_norm_plugin")


def rel_pos_attention_plugin(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, pos_bias_u: np.ndarray, pos_bias_v: np.ndarray,
                             lengths: Tensor, heads: int) -> Tensor:
    """WenetRelPosAttention plugin: softmax(((q+u)k^T + (q+v)p^T)/sqrt(d_k), key mask) v in one kernel."""
    from plugins.trt_plugins import add_rel_pos_attention

    q, k, v, pos = (to_compute(t) for t in (q, k, v, pos))
    u, w = constant(pos_bias_u, op="pos_bias_u"), constant(pos_bias_v, op="pos_bias_v")
    out = add_rel_pos_attention(current().network, q.trt, k.trt, v.trt, pos.trt, u.trt, w.trt, lengths.trt, heads=heads)
    return _name_plugin([out], "rel_pos_attention_plugin")[0]


def _name_plugin(itensors, op: str) -> list[Tensor]:
    """Name the plugin layer (the helpers add exactly one layer: the last) after the current scope."""
    network = current().network
    _name(network.get_layer(network.num_layers - 1), op)
    return [Tensor(t) for t in itensors]
