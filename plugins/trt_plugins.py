"""TensorRT IPluginV3 wrappers of the plugin kernels, with their creators and registration.

Written for full TensorRT 10.x/11 (IPluginV3OneCore/Build/Runtime in Python, as NVIDIA's python_plugin
samples do). TensorRT-RTX has the same plugin classes and registry, so these classes import, register
and run their `enqueue` there too, but RTX networks have no `add_plugin_v3`: `add_plugin_layer` refuses
with a clear message.

    from plugins.trt_plugins import register_plugins, add_layernorm, add_rel_pos_attention
    register_plugins()                          # idempotent
    s, n = add_layernorm(network, x, gamma, beta, eps=1e-5, residual=r)   # ITensors
    out = add_rel_pos_attention(network, q, k, v, p, u, w, lengths, heads=4)

The kernels are compiled with NVRTC at the first `enqueue` and cached (plugins/loader.py).
"""
from __future__ import annotations

import numpy as np

from netdef.backend import BACKEND_NAME, HAS_PLUGIN_V3, trt

from . import launch
from .names import (
    ATTENTION_FIELD_HEADS,
    ATTENTION_PLUGIN_NAME,
    LAYERNORM_FIELD_EPS,
    LAYERNORM_FIELD_HAS_RESIDUAL,
    LAYERNORM_PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)

_FLOAT_TYPES = (trt.DataType.FLOAT, trt.DataType.HALF)


class PluginConfigError(ValueError):
    """A plugin got inputs it cannot handle; the message names the plugin and the tensor."""


def _volume(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1


def _known(dim) -> bool:
    return int(dim) >= 0


def _same_shape(a, b) -> bool:
    """Equal ranks and equal dimensions wherever both are known (-1: decided at run time)."""
    a, b = tuple(int(d) for d in a), tuple(int(d) for d in b)
    return len(a) == len(b) and all(x == y or x < 0 or y < 0 for x, y in zip(a, b))


def _field_values(fc) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(f.data) for f in fc} if fc is not None else {}


class _PluginBase(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
    """What both plugins share: the IPluginV3 capability plumbing and the float-type format check."""

    plugin_name_value = ""

    def __init__(self, num_outputs: int):
        trt.IPluginV3.__init__(self)
        trt.IPluginV3OneCore.__init__(self)
        trt.IPluginV3OneBuild.__init__(self)
        trt.IPluginV3OneRuntime.__init__(self)
        self.plugin_name = self.plugin_name_value
        self.plugin_namespace = PLUGIN_NAMESPACE
        self.plugin_version = PLUGIN_VERSION
        self.num_outputs = num_outputs
        self.timing_cache_id = ""  # one tactic: instances need no separate timing

    def get_capability_interface(self, type):
        return self

    def attach_to_context(self, context):
        return self.clone()

    def configure_plugin(self, inp, out):
        self._check_shapes([d.desc.dims for d in inp])  # at build time, with -1 for dynamic dimensions

    def on_shape_change(self, inp, out):
        self._check_shapes([d.dims for d in inp])

    def _check_shapes(self, dims) -> None:  # overridden
        pass

    def _float_io(self, pos, in_out, int_inputs=()) -> bool:
        """Linear layout; the int inputs INT32; every other tensor the type of input 0 (FP32 or FP16)."""
        desc = in_out[pos].desc
        if desc.format != trt.TensorFormat.LINEAR:
            return False
        if pos in int_inputs:
            return desc.type == trt.DataType.INT32
        if pos == 0:
            return desc.type in _FLOAT_TYPES
        return desc.type == in_out[0].desc.type

    @staticmethod
    def _dtype(desc):
        return np.dtype(trt.nptype(desc.type))


class LayerNormPlugin(_PluginBase):
    """LayerNorm over the last dimension, optionally fused with the residual add before it.

    Inputs x, [residual,] gamma, beta; outputs [x + residual,] LN(x + residual).
    """

    plugin_name_value = LAYERNORM_PLUGIN_NAME

    def __init__(self, eps: float = 1e-5, has_residual: bool = True):
        self.eps = float(eps)
        self.has_residual = bool(has_residual)
        super().__init__(num_outputs=2 if self.has_residual else 1)

    @property
    def num_inputs(self) -> int:
        return 4 if self.has_residual else 3

    def clone(self):
        return LayerNormPlugin(self.eps, self.has_residual)

    def get_fields_to_serialize(self):
        return trt.PluginFieldCollection([
            trt.PluginField(LAYERNORM_FIELD_EPS, np.array([self.eps], dtype=np.float32), trt.PluginFieldType.FLOAT32),
            trt.PluginField(LAYERNORM_FIELD_HAS_RESIDUAL, np.array([int(self.has_residual)], dtype=np.int32),
                            trt.PluginFieldType.INT32),
        ])

    def get_output_data_types(self, input_types):
        return [input_types[0]] * self.num_outputs

    def get_output_shapes(self, inputs, shape_inputs, expr_builder):
        return [trt.DimsExprs(inputs[0]) for _ in range(self.num_outputs)]

    def supports_format_combination(self, pos, in_out, num_inputs):
        return self._float_io(pos, in_out)

    def _check_shapes(self, dims) -> None:
        if len(dims) != self.num_inputs:
            raise PluginConfigError(f"{LAYERNORM_PLUGIN_NAME}: expected {self.num_inputs} inputs, got {len(dims)}")
        x = dims[0]
        width = int(x[len(x) - 1])
        if _known(width):
            launch.check_layernorm_dim(width)
        if self.has_residual and not _same_shape(dims[1], x):
            raise PluginConfigError(f"{LAYERNORM_PLUGIN_NAME}: residual {tuple(dims[1])} must match x {tuple(x)}")
        for name, d in zip(("gamma", "beta"), dims[-2:]):
            if not _same_shape(d, (width,)):
                raise PluginConfigError(f"{LAYERNORM_PLUGIN_NAME}: {name} must be [{width}], got {tuple(d)}")

    def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
        dims = input_desc[0].dims
        width = int(dims[len(dims) - 1])
        rows = _volume(dims) // width
        if self.has_residual:
            x, residual, gamma, beta = inputs
            out_sum, out_norm = outputs
        else:
            (x, gamma, beta), residual = inputs, 0
            (out_norm,), out_sum = outputs, 0
        launch.layernorm(x, residual, gamma, beta, out_sum, out_norm, rows=rows, dim=width, eps=self.eps,
                         dtype=self._dtype(input_desc[0]), stream=stream)
        return 0


class RelPosAttentionPlugin(_PluginBase):
    """WeNet's relative-position self-attention (before linear_out) in one kernel.

    Inputs q, k, v [B, T, H*dk], p [H, T, dk] (or [1, H, T, dk]), pos_bias_u, pos_bias_v [H, dk],
    lengths [B] int32; output [B, T, H*dk]. Keys j >= lengths[b] are masked.
    """

    plugin_name_value = ATTENTION_PLUGIN_NAME
    LENGTHS_INPUT = 6

    def __init__(self, heads: int = 4):
        self.heads = int(heads)
        if self.heads <= 0:
            raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: heads must be positive, got {heads}")
        super().__init__(num_outputs=1)

    def clone(self):
        return RelPosAttentionPlugin(self.heads)

    def get_fields_to_serialize(self):
        return trt.PluginFieldCollection([
            trt.PluginField(ATTENTION_FIELD_HEADS, np.array([self.heads], dtype=np.int32), trt.PluginFieldType.INT32),
        ])

    def get_output_data_types(self, input_types):
        return [input_types[0]]

    def get_output_shapes(self, inputs, shape_inputs, expr_builder):
        return [trt.DimsExprs(inputs[0])]

    def supports_format_combination(self, pos, in_out, num_inputs):
        return self._float_io(pos, in_out, int_inputs=(self.LENGTHS_INPUT,))

    def _check_shapes(self, dims) -> None:
        if len(dims) != 7:
            raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: expected 7 inputs (q, k, v, p, u, v bias, lengths), got {len(dims)}")
        q = tuple(int(d) for d in dims[0])
        if len(q) != 3:
            raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: q must be [B, T, H*dk], got {q}")
        for name, d in zip(("k", "v"), dims[1:3]):
            if not _same_shape(d, q):
                raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: {name} {tuple(d)} must match q {q}")
        if _known(q[2]):
            if q[2] % self.heads:
                raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: q's last dimension {q[2]} is not a multiple of heads={self.heads}")
            launch.check_head_dim(q[2] // self.heads)
            dk = q[2] // self.heads
            p = tuple(int(x) for x in dims[3])
            if len(p) not in (3, 4) or (len(p) == 4 and p[0] not in (1, -1)) or not _same_shape(p[-3:], (self.heads, q[1], dk)):
                raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: p must be [H={self.heads}, T={q[1]}, dk={dk}], got {p}")
            for name, d in zip(("pos_bias_u", "pos_bias_v"), dims[4:6]):
                if not _same_shape(d, (self.heads, dk)):
                    raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: {name} must be [{self.heads}, {dk}], got {tuple(d)}")
        if not _same_shape(dims[6], (q[0],)):
            raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: lengths must be [B={q[0]}], got {tuple(dims[6])}")

    def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
        batch, seq_len, hidden = (int(d) for d in input_desc[0].dims)
        q, k, v, p, u, w, lengths = inputs
        launch.relpos_attention(q, k, v, p, u, w, lengths, outputs[0], batch=batch, seq_len=seq_len,
                                heads=self.heads, head_dim=hidden // self.heads,
                                dtype=self._dtype(input_desc[0]), stream=stream)
        return 0


class _CreatorBase(trt.IPluginCreatorV3One):
    def __init__(self, name: str, fields: list):
        trt.IPluginCreatorV3One.__init__(self)
        self.name = name
        self.plugin_namespace = PLUGIN_NAMESPACE
        self.plugin_version = PLUGIN_VERSION
        self.field_names = trt.PluginFieldCollection(fields)


class LayerNormPluginCreator(_CreatorBase):
    def __init__(self):
        super().__init__(LAYERNORM_PLUGIN_NAME, [
            trt.PluginField(LAYERNORM_FIELD_EPS, np.array([], dtype=np.float32), trt.PluginFieldType.FLOAT32),
            trt.PluginField(LAYERNORM_FIELD_HAS_RESIDUAL, np.array([], dtype=np.int32), trt.PluginFieldType.INT32),
        ])

    def create_plugin(self, name, fc, phase):
        fields = _field_values(fc)
        if LAYERNORM_FIELD_EPS not in fields:
            raise PluginConfigError(f"{LAYERNORM_PLUGIN_NAME}: field '{LAYERNORM_FIELD_EPS}' is required")
        has_residual = int(fields.get(LAYERNORM_FIELD_HAS_RESIDUAL, np.array([1])).reshape(-1)[0])
        return LayerNormPlugin(float(fields[LAYERNORM_FIELD_EPS].reshape(-1)[0]), bool(has_residual))


class RelPosAttentionPluginCreator(_CreatorBase):
    def __init__(self):
        super().__init__(ATTENTION_PLUGIN_NAME, [
            trt.PluginField(ATTENTION_FIELD_HEADS, np.array([], dtype=np.int32), trt.PluginFieldType.INT32),
        ])

    def create_plugin(self, name, fc, phase):
        fields = _field_values(fc)
        if ATTENTION_FIELD_HEADS not in fields:
            raise PluginConfigError(f"{ATTENTION_PLUGIN_NAME}: field '{ATTENTION_FIELD_HEADS}' is required")
        return RelPosAttentionPlugin(int(fields[ATTENTION_FIELD_HEADS].reshape(-1)[0]))


_CREATORS: list = []  # the registry holds borrowed references: keep the Python objects alive


def register_plugins() -> None:
    """Register both creators under PLUGIN_NAMESPACE in TensorRT's plugin registry (once per process)."""
    registry = trt.get_plugin_registry()
    for creator_type, name in ((LayerNormPluginCreator, LAYERNORM_PLUGIN_NAME),
                               (RelPosAttentionPluginCreator, ATTENTION_PLUGIN_NAME)):
        if registry.get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:
            continue
        creator = creator_type()
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            raise RuntimeError(f"TensorRT refused to register plugin creator {PLUGIN_NAMESPACE}::{name}")
        _CREATORS.append(creator)


def create_plugin(name: str, fields: list):
    """A plugin instance made through the registered creator, as TensorRT itself would make it."""
    register_plugins()
    creator = trt.get_plugin_registry().get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    return creator.create_plugin(name, trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)


def add_plugin_layer(network, inputs: list, plugin):
    """network.add_plugin_v3, or a clear refusal where the backend has no plugin layers (TensorRT-RTX)."""
    if not HAS_PLUGIN_V3:
        raise RuntimeError(
            f"--plugins needs plugin layers (INetworkDefinition.add_plugin_v3), which {BACKEND_NAME} does not "
            "have; build with full TensorRT (10.x/11) or drop --plugins"
        )
    layer = network.add_plugin_v3(inputs, [], plugin)
    layer.name = f"{plugin.plugin_name}_{network.num_layers}"
    return layer


def add_layernorm(network, x, gamma, beta, *, eps: float, residual=None):
    """(sum, norm) with a residual, else (norm,): ITensors of a WenetLayerNorm plugin layer."""
    plugin = create_plugin(LAYERNORM_PLUGIN_NAME, [
        trt.PluginField(LAYERNORM_FIELD_EPS, np.array([eps], dtype=np.float32), trt.PluginFieldType.FLOAT32),
        trt.PluginField(LAYERNORM_FIELD_HAS_RESIDUAL, np.array([int(residual is not None)], dtype=np.int32),
                        trt.PluginFieldType.INT32),
    ])
    inputs = [x, residual, gamma, beta] if residual is not None else [x, gamma, beta]
    layer = add_plugin_layer(network, inputs, plugin)
    return tuple(layer.get_output(i) for i in range(layer.num_outputs))


def add_rel_pos_attention(network, q, k, v, p, pos_bias_u, pos_bias_v, lengths, *, heads: int):
    """The [B, T, H*dk] output ITensor of a WenetRelPosAttention plugin layer."""
    plugin = create_plugin(ATTENTION_PLUGIN_NAME, [
        trt.PluginField(ATTENTION_FIELD_HEADS, np.array([heads], dtype=np.int32), trt.PluginFieldType.INT32),
    ])
    return add_plugin_layer(network, [q, k, v, p, pos_bias_u, pos_bias_v, lengths], plugin).get_output(0)
