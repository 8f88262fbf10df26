"""Maps a WeNet conformer's encoder.onnx / decoder.onnx to named tensors and infers its config.

What WeNet's TorchScript export keeps and loses (../shared/wenet.md):
- biases, LayerNorm gamma/beta, pos_bias_u/v, CMVN, embeddings, the pe tables and unfolded convs
  keep their PyTorch names; value-identical initializers are de-duplicated, the other names
  re-created by Identity nodes (so every lookup here goes through `Graph.source`);
- Linear weights become anonymous `onnx::MatMul_N` initializers in [in, out] layout: each is found
  as the constant operand of the MatMul that feeds a named `*.bias` Add, linear_pos (no bias) from
  the attention's pos_bias_v branch;
- a folded BatchNorm leaves an anonymous depthwise Conv, found from its conv module's pointwise_conv1.
Hyperparameters come from shapes and from constants in the graph (LayerNorm's eps Add, the heads in
the Reshape after linear_q, the Mul on ctc_score), never from node names or node order.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .loader import CONFIG_FORMAT, LAYOUTS

ENCODER_INPUTS = ("speech", "speech_lengths")
ENCODER_OUTPUTS = ("encoder_out", "encoder_out_lens")
DECODER_INPUTS = ("encoder_out", "encoder_out_lens", "hyps_pad_sos_eos", "hyps_lens_sos", "ctc_score")
DECODER_OUTPUT_CHOICES = ("decoder_out", "best_index")
# Ops that only move or view data; walked through when following a weight to its consumer.
VIEW_OPS = {"Identity", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Cast"}


class ExtractError(ValueError):
    """The ONNX is not (or not recognisably) a WeNet conformer; the message says what is missing."""


def f32(value) -> float:
    """A float32 constant as the shortest decimal that round-trips (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


class Graph:
    """An ONNX graph with producer/consumer indexes and constant folding through Identity nodes."""

    def __init__(self, path: Path, label: str):
        self.path, self.label = Path(path), label
        try:
            model = onnx.load(str(path))
        except FileNotFoundError:
            raise ExtractError(f"{path}: no such file") from None
        except Exception as err:  # protobuf's DecodeError and friends
            raise ExtractError(f"{path}: not a readable ONNX model ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'truncated or corrupt'})") from None
        g = model.graph
        if not g.node:
            raise ExtractError(f"{path}: not a readable ONNX model (empty graph)")
        self.initializers = {t.name: t for t in g.initializer}
        self.inputs = {i.name: i for i in g.input if i.name not in self.initializers}
        self.outputs = [o.name for o in g.output]
        self.nodes = list(g.node)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers[inp].append(node)
        self._arrays: dict[str, np.ndarray] = {}

    def fail(self, what: str) -> ExtractError:
        return ExtractError(f"{self.path}: not a WeNet conformer {self.label}: {what}")

    def source(self, name: str) -> str | None:
        """The initializer behind `name`, following Identity nodes; None if it is not one."""
        while name not in self.initializers:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return name

    def array(self, name: str) -> np.ndarray | None:
        """The constant value of `name` (initializer, Constant node, through Identity), else None."""
        src = self.source(name)
        if src is not None:
            if src not in self._arrays:
                self._arrays[src] = numpy_helper.to_array(self.initializers[src])
            return self._arrays[src]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                    return np.array(onnx.helper.get_attribute_value(attr))
        return None

    def users(self, name: str, op: str | None = None) -> list[onnx.NodeProto]:
        return [n for n in self.consumers.get(name, []) if op is None or n.op_type == op]

    def produced_by(self, name: str, op: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None

    def attr(self, node: onnx.NodeProto, key: str, default=None):
        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def const_operand(self, node: onnx.NodeProto) -> tuple[int, np.ndarray] | None:
        """(index, value) of the single constant input of a binary node."""
        found = [(i, self.array(x)) for i, x in enumerate(node.input[:2])]
        found = [(i, v) for i, v in found if v is not None]
        return found[0] if len(found) == 1 else None

    def dim(self, input_name: str, axis: int):
        dims = self.inputs[input_name].type.tensor_type.shape.dim
        d = dims[axis]
        return d.dim_value if d.HasField("dim_value") else None

    def walk_back(self, name: str, until: str) -> onnx.NodeProto | None:
        """The first `until` node upstream of `name` through view ops (first input only)."""
        for _ in range(16):
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == until:
                return node
            if node.op_type not in VIEW_OPS and node.op_type != "Slice":
                return None
            name = node.input[0]
        return None

    def find_forward(self, start: str, op: str, limit: int = 40) -> onnx.NodeProto | None:
        """Breadth-first: the nearest `op` node downstream of tensor `start`."""
        frontier, seen = [start], set()
        while frontier and limit > 0:
            nxt = []
            for t in frontier:
                for node in self.users(t):
                    if id(node) in seen:
                        continue
                    seen.add(id(node))
                    limit -= 1
                    if node.op_type == op:
                        return node
                    nxt.extend(node.output)
            frontier = nxt
        return None


@dataclass
class Mapping:
    """The tensors found in one graph, and which initializer each came from."""

    graph: Graph
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    origin: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (initializer, how)

    def put(self, name: str, onnx_name: str, how: str, value: np.ndarray | None = None) -> None:
        g = self.graph
        src = g.source(onnx_name)
        if src is None:
            constant = g.produced_by(onnx_name, "Constant")
            if constant is None:
                raise g.fail(f"{name} should be a constant, {onnx_name!r} is computed")
            src, how = f"Constant node output {onnx_name}", f"{how} (Constant node)"
        if value is None:
            value = g.array(onnx_name)
        if name in self.tensors and not np.array_equal(self.tensors[name], value):
            raise g.fail(f"two different constants map to {name}")
        self.tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
        self.origin[name] = (src, how)


# ----------------------------------------------------------------------------------------------
# Shared structure: linears, LayerNorms, attention heads


_PARAM_NAME = re.compile(r"^(encoder|decoder|ctc)\.[\w.]+\.(weight|bias|pos_bias_u|pos_bias_v|mean|istd|pe|running_mean|running_var)$")


def map_named(m: Mapping) -> None:
    """Tensors that keep their PyTorch name, as the nodes read them (Identity outputs included)."""
    g = m.graph
    for name in list(g.consumers):
        if not _PARAM_NAME.match(name) or g.source(name) is None:
            continue
        if name.endswith(".pe"):
            m.put(name, name, "named sinusoidal table, squeezed to [max_len, d]", squeeze_table(g, name))
        else:
            m.put(name, name, "named")


def map_linears(m: Mapping) -> None:
    """Every `P.bias` Add fed by a MatMul with a constant [in, out] operand gives P.weight = W^T."""
    g = m.graph
    for node in g.nodes:
        if node.op_type != "Add":
            continue
        bias = next((x for x in node.input if x.endswith(".bias") and g.source(x) is not None), None)
        if bias is None:
            continue
        other = node.input[1] if node.input[0] == bias else node.input[0]
        matmul = g.produced_by(other, "MatMul")
        if matmul is None or g.source(matmul.input[1]) is None:
            continue
        weight = g.array(matmul.input[1])
        if weight.ndim != 2:
            raise g.fail(f"the MatMul before {bias} has a {weight.ndim}-D weight")
        m.put(bias[: -len(".bias")] + ".weight", matmul.input[1], "MatMul operand [in, out], transposed", weight.T)


def layer_norm_eps(g: Graph, gamma: str) -> float:
    """eps of the LayerNorm whose gamma is `gamma`: the constant of Add(variance, eps) under Sqrt,
    or the attribute of a LayerNormalization node (opset >= 17 exports)."""
    for node in g.users(gamma):
        if node.op_type == "LayerNormalization":
            return f32(g.attr(node, "epsilon", 1e-5))
        if node.op_type != "Mul":
            continue
        div = g.produced_by(node.input[0] if node.input[1] == gamma else node.input[1], "Div")
        sqrt = div is not None and g.produced_by(div.input[1], "Sqrt")
        add = sqrt and g.produced_by(sqrt.input[0], "Add")
        const = add and g.const_operand(add)
        if const:
            return f32(const[1].reshape(-1)[0])
    raise g.fail(f"no LayerNorm pattern (Mul(Div(x - mean, Sqrt(var + eps)), gamma)) around {gamma}")


def common_eps(g: Graph, gammas: list[str]) -> float:
    values = {layer_norm_eps(g, name) for name in gammas}
    if len(values) != 1:
        raise g.fail(f"LayerNorms use different eps values {sorted(values)}")
    return values.pop()


def attention_heads(g: Graph, linear_q_bias: str, d_model: int) -> int:
    """Heads from the Reshape after linear_q: its shape is [B, -1, h, d_k] (a constant, or a
    Concat of a runtime batch size and constants)."""
    for add in g.users(linear_q_bias, "Add"):
        for reshape in g.users(add.output[0], "Reshape"):
            shape = g.array(reshape.input[1])
            if shape is None:
                concat = g.produced_by(reshape.input[1], "Concat")
                if concat is None:
                    continue
                parts = [g.array(x) for x in concat.input]
                if any(p is None for p in parts[-2:]):
                    continue
                shape = np.concatenate([np.reshape(p, -1) for p in parts[-2:]])
            h, dk = int(shape[-2]), int(shape[-1])
            if h * dk != d_model:
                raise g.fail(f"attention Reshape after {linear_q_bias} gives {h} heads x {dk} != d_model {d_model}")
            return h
    raise g.fail(f"no Reshape to [B, -1, heads, d_k] after {linear_q_bias}")


def block_count(g: Graph, names, prefix: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", n))}
    if not indices:
        raise g.fail(f"no {prefix}.N.* tensors")
    if indices != set(range(len(indices))):
        raise g.fail(f"{prefix} block indices {sorted(indices)} are not 0..N-1")
    return len(indices)


def squeeze_table(g: Graph, tensor: str) -> np.ndarray:
    """A positional table as [max_len, d]: WeNet versions keep it as [1, max_len, d] or [max_len, d]."""
    value = g.array(tensor)
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 2:
        raise g.fail(f"positional table {tensor!r} has shape {list(value.shape)}, expected [1, max_len, d] or [max_len, d]")
    return value


def positional_table(m: Mapping, name: str, tensor: str) -> None:
    """The pe table behind `tensor` (a Slice of it), when the exporter left it anonymous (WeNet
    keeps pe as a plain attribute, which the exporter turns into an unnamed constant)."""
    if name in m.tensors:
        return
    g = m.graph
    node = g.walk_back(tensor, "Slice")
    if node is None or g.array(node.input[0]) is None:
        raise g.fail(f"no sliced constant sinusoidal table found for {name}")
    m.put(name, node.input[0], "sliced table found by structure, squeezed to [max_len, d]", squeeze_table(g, node.input[0]))


# ----------------------------------------------------------------------------------------------
# Encoder


def _check_io(g: Graph, inputs, outputs, other: str) -> None:
    missing_in = [x for x in inputs if x not in g.inputs]
    missing_out = [x for x in outputs if x not in g.outputs]
    if missing_in or missing_out:
        what = [f"missing {kind} {', '.join(repr(x) for x in names)}"
                for kind, names in (("inputs", missing_in), ("outputs", missing_out)) if names]
        looks = {"decoder": "hyps_pad_sos_eos", "encoder": "speech"}[other]
        hint = f" (it looks like the {other}: were the two files swapped?)" if looks in g.inputs else ""
        raise g.fail("; ".join(what) + hint)


def _map_graph(path: Path, network: str, inputs, outputs, other: str):
    """Open and check one graph, map its named initializers and linear layers.

    Returns (graph, mapping, tensors by WeNet name, need), where need(name) is the tensor or an
    error naming the file and the missing tensor."""
    g = Graph(path, network)
    _check_io(g, inputs, outputs, other)
    m = Mapping(g)
    map_named(m)
    map_linears(m)
    t = m.tensors

    def need(name: str) -> np.ndarray:
        if name not in t:
            raise g.fail(f"no tensor for {name}")
        return t[name]

    return g, m, t, need


def extract_encoder(path: Path) -> tuple[Mapping, dict, dict]:
    """(mapping, encoder config, top-level facts: vocab_size, beam_size) of an encoder.onnx."""
    g, m, t, need = _map_graph(path, "encoder", ENCODER_INPUTS, ENCODER_OUTPUTS, "decoder")
    d = need("encoder.after_norm.weight").shape[0]
    blocks = block_count(g, t, "encoder.encoders")
    # linear_pos has no bias: it is the MatMul behind the key of (q + pos_bias_v) @ p^T.
    for i in range(blocks):
        p = f"encoder.encoders.{i}.self_attn"
        need(f"{p}.pos_bias_v")
        found = False
        for add in g.users(f"{p}.pos_bias_v", "Add"):
            matmul = g.find_forward(add.output[0], "MatMul", limit=6)
            if matmul is None:
                continue
            proj = g.walk_back(matmul.input[1], "MatMul")
            if proj is not None and g.source(proj.input[1]) is not None:
                m.put(f"{p}.linear_pos.weight", proj.input[1], "MatMul operand [in, out] of (q + pos_bias_v) @ p^T, transposed",
                      g.array(proj.input[1]).T)
                positional_table(m, "encoder.embed.pos_enc.pe", proj.input[0])
                found = True
                break
        if not found:
            raise g.fail(f"no linear_pos projection found from {p}.pos_bias_v")

    # Conv module: depthwise conv (and BN, if present) found from pointwise_conv1.
    bn_eps: set[float] = set()
    kernels: set[int] = set()
    for i in range(blocks):
        c = f"encoder.encoders.{i}.conv_module"
        need(f"{c}.pointwise_conv1.weight")
        pw1 = next((n for n in g.users(f"{c}.pointwise_conv1.weight", "Conv")), None)
        depthwise = pw1 is not None and g.find_forward(pw1.output[0], "Conv", limit=12)
        if not depthwise or g.attr(depthwise, "group", 1) != d:
            raise g.fail(f"no depthwise Conv (group = {d}) after {c}.pointwise_conv1")
        if len(depthwise.input) < 3:
            raise g.fail(f"{c}.depthwise_conv has no bias input")
        m.put(f"{c}.depthwise_conv.weight", depthwise.input[1], "Conv weight (group = d), found after pointwise_conv1")
        m.put(f"{c}.depthwise_conv.bias", depthwise.input[2], "Conv bias, found after pointwise_conv1")
        kernels.add(int(g.array(depthwise.input[1]).shape[-1]))
        bn = g.users(depthwise.output[0], "BatchNormalization")
        if bn:
            for stat, x in zip(("weight", "bias", "running_mean", "running_var"), bn[0].input[1:5]):
                m.put(f"{c}.norm.{stat}", x, "BatchNormalization input")
            bn_eps.add(f32(g.attr(bn[0], "epsilon", 1e-5)))
    if len(kernels) != 1 or len(bn_eps) > 1:
        raise g.fail(f"blocks differ in conv kernel {sorted(kernels)} or BatchNorm eps {sorted(bn_eps)}")

    # Subsampling: two 3x3 stride-2 Convs.
    for conv in ("encoder.embed.conv.0", "encoder.embed.conv.2"):
        node = next(iter(g.users(f"{conv}.weight", "Conv")), None) if f"{conv}.weight" in t else None
        if node is None or list(g.attr(node, "strides", [])) != [2, 2] or list(g.attr(node, "kernel_shape", [])) != [3, 3]:
            raise g.fail(f"no 3x3 stride-2 Conv {conv} (only Conv2dSubsampling4 is supported)")

    ff_w1 = need("encoder.encoders.0.feed_forward.w_1.weight")
    activation = _ffn_activation(g, "encoder.encoders.0.feed_forward.w_1.bias")
    embed_out = need("encoder.embed.out.0.weight")
    input_dim = g.dim("speech", 2)
    cmvn = "encoder.global_cmvn.mean" in t
    if input_dim is None:
        input_dim = t["encoder.global_cmvn.mean"].shape[0] if cmvn else None
    if input_dim is None:
        raise g.fail("the feature dimension of 'speech' is not static and there is no CMVN to read it from")
    need("encoder.embed.pos_enc.pe")

    config = {
        "input_dim": int(input_dim),
        "output_size": int(d),
        "attention_heads": attention_heads(g, "encoder.encoders.0.self_attn.linear_q.bias", d),
        "linear_units": int(ff_w1.shape[0]),
        "num_blocks": blocks,
        "cnn_module_kernel": kernels.pop(),
        "layer_norm_eps": common_eps(g, [n for n in t if re.search(r"norm[\w]*\.weight$", n) and ".conv_module." not in n]),
        "global_cmvn": cmvn,
        "batch_norm": "separate" if bn_eps else "folded",
        "batch_norm_eps": bn_eps.pop() if bn_eps else None,
        "subsampling": "conv2d4",
        "subsampled_feature_dim": int(embed_out.shape[1] // d),
        "pos_enc_max_len": int(t["encoder.embed.pos_enc.pe"].shape[0]),
        "macaron": "encoder.encoders.0.feed_forward_macaron.w_1.weight" in t,
        "activation": activation,
    }
    h = need("encoder.encoders.0.self_attn.pos_bias_u").shape[0]
    if h != config["attention_heads"]:
        raise g.fail(f"pos_bias_u has {h} heads, the attention Reshape {config['attention_heads']}")
    topk = next((n for n in g.nodes if n.op_type == "TopK"), None)
    k = g.array(topk.input[1]) if topk is not None else None
    facts = {"vocab_size": int(need("ctc.ctc_lo.weight").shape[0]),
             "beam_size": int(np.reshape(k, -1)[0]) if k is not None else None}
    return m, config, facts


def _ffn_activation(g: Graph, w1_bias: str) -> str:
    """swish (Sigmoid * x) or relu after the FFN's first Linear."""
    for add in g.users(w1_bias, "Add"):
        ops = {n.op_type for n in g.users(add.output[0])}
        if "Sigmoid" in ops:
            return "swish"
        if "Relu" in ops:
            return "relu"
    raise g.fail(f"unknown activation after {w1_bias}")


# ----------------------------------------------------------------------------------------------
# Decoder


def extract_decoder(path: Path) -> tuple[Mapping, dict, dict]:
    """(mapping, decoder config, top-level facts: vocab_size, ctc_weight, beam_size) of a decoder.onnx."""
    g, m, t, need = _map_graph(path, "decoder", DECODER_INPUTS, ("best_index",), "encoder")
    embed = need("decoder.embed.0.weight")
    if "decoder.embed.1.pe" not in t:
        # The token embedding Gather -> Mul(sqrt(d)) -> Add(pe slice): the Add's other operand.
        gather = next(iter(g.users("decoder.embed.0.weight", "Gather")), None)
        mul = gather is not None and next(iter(g.users(gather.output[0], "Mul")), None)
        add = mul and next(iter(g.users(mul.output[0], "Add")), None)
        if not add:
            raise g.fail("no Add of the positional table after the token embedding")
        positional_table(m, "decoder.embed.1.pe", add.input[1] if add.input[0] == mul.output[0] else add.input[0])
    d = need("decoder.after_norm.weight").shape[0]
    if embed.shape[1] != d:
        raise g.fail(f"token embedding width {embed.shape[1]} != d_model {d}")
    config = {
        "output_size": int(d),
        "attention_heads": attention_heads(g, "decoder.decoders.0.self_attn.linear_q.bias", d),
        "linear_units": int(need("decoder.decoders.0.feed_forward.w_1.weight").shape[0]),
        "num_blocks": block_count(g, t, "decoder.decoders"),
        "layer_norm_eps": common_eps(g, [n for n in t if re.search(r"norm\w*\.weight$", n)]),
        "pos_enc_max_len": int(t["decoder.embed.1.pe"].shape[0]),
        "outputs": [o for o in DECODER_OUTPUT_CHOICES if o in g.outputs],
    }
    # ctc_weight: the constant of Mul(ctc_score, w); a bare Add means weight 1.
    ctc_weight = None
    for node in g.users("ctc_score"):
        if node.op_type == "Mul" and (c := g.const_operand(node)):
            ctc_weight = f32(np.reshape(c[1], -1)[0])
        elif node.op_type == "Add":
            ctc_weight = 1.0
    if ctc_weight is None:
        raise g.fail("ctc_score is not scaled by a constant ctc_weight (no Mul(ctc_score, w))")
    vocab = int(need("decoder.output_layer.weight").shape[0])
    if embed.shape[0] != vocab:
        raise g.fail(f"embedding vocabulary {embed.shape[0]} != output layer {vocab}")
    facts = {"vocab_size": vocab, "ctc_weight": ctc_weight, "beam_size": g.dim("hyps_pad_sos_eos", 1)}
    return m, config, facts


# ----------------------------------------------------------------------------------------------


def unused_reason(g: Graph, name: str) -> str | None:
    """Why an unmapped initializer is not a weight, or None if it looks like one."""
    value = g.array(name)
    ops = sorted({n.op_type for n in g.users(name)} | {
        u.op_type for n in g.users(name) if n.op_type == "Identity" for u in g.users(n.output[0])})
    if not ops:
        return "not read by any node"
    if value.dtype.kind in "iub":
        return f"integer/bool constant (shape, index or mask) read by {'/'.join(ops)}"
    if value.size <= 1:
        return f"scalar constant read by {'/'.join(ops)}"
    return None


def report(m: Mapping) -> dict:
    g = m.graph
    mapped: dict[str, list[dict]] = defaultdict(list)
    for name, (src, how) in m.origin.items():
        mapped[src].append({"name": name, "how": how})
    entries = {}
    for init in g.initializers:
        if init in mapped:
            entries[init] = {"mapped": mapped[init]}
            continue
        reason = unused_reason(g, init)
        if reason is None:
            shape = list(g.array(init).shape)
            raise g.fail(f"initializer {init!r} {shape} is a float tensor that maps to no WeNet parameter")
        entries[init] = {"unused": reason}
    return entries


def extract(encoder_path: str | Path, decoder_path: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict]:
    """(config, {"encoder": tensors, "decoder": tensors}, report) for a WeNet encoder/decoder pair.
    Raises ExtractError with a one-line message naming the file and what is missing."""
    enc_map, enc_cfg, enc_facts = extract_encoder(Path(encoder_path))
    dec_map, dec_cfg, dec_facts = extract_decoder(Path(decoder_path))
    if enc_facts["vocab_size"] != dec_facts["vocab_size"]:
        raise ExtractError(f"{decoder_path}: vocabulary {dec_facts['vocab_size']} does not match the encoder's {enc_facts['vocab_size']}")
    if enc_cfg["output_size"] != dec_cfg["output_size"]:
        raise ExtractError(f"{decoder_path}: d_model {dec_cfg['output_size']} does not match the encoder's {enc_cfg['output_size']}")
    vocab = enc_facts["vocab_size"]
    beam = dec_facts["beam_size"] or enc_facts["beam_size"]
    config = {
        "format": CONFIG_FORMAT,
        "encoder": enc_cfg,
        "decoder": dec_cfg,
        "vocab_size": vocab,
        "sos": vocab - 1,  # WeNet's convention; the graphs take sos/eos as inputs, never as constants
        "eos": vocab - 1,
        "ctc_weight": dec_facts["ctc_weight"],
        "beam_size": beam,
    }
    tensors = {}
    for part, m in (("encoder", enc_map), ("decoder", dec_map)):
        layout = LAYOUTS[part](config)
        missing = [n for n in layout if n not in m.tensors]
        if missing:
            raise m.graph.fail(f"no tensor for {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = [n for n in m.tensors if n not in layout]
        if extra:
            raise m.graph.fail(f"tensor {extra[0]} is not part of the inferred layout")
        for name, shape in layout.items():
            if m.tensors[name].shape != shape:
                raise m.graph.fail(f"{name} has shape {list(m.tensors[name].shape)}, the inferred config implies {list(shape)}")
        tensors[part] = {name: m.tensors[name] for name in layout}
    rep = {"encoder": {"path": str(encoder_path), "initializers": report(enc_map)},
           "decoder": {"path": str(decoder_path), "initializers": report(dec_map)}}
    return config, tensors, rep
