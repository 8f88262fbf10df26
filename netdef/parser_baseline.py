"""The baseline the netdef engines are compared with: engines built from encoder.onnx / decoder.onnx by
TensorRT's own ONNX parser, as `trtexec --onnx` would, with the same profiles and manifest as netdef builds.

Graph fixes. The 2022 hackathon model needed onnx-graphsurgeon surgery before TensorRT 8.2 could parse
it (the bool-mask slices Not_30 / Slice_79 / Slice_84). The installed parsers take the WeNet graphs as
exported (see docs/baseline.md and tests/test_parser_baseline.py, which parse the unfixed graphs), so no
fix is applied; `GRAPH_FIXES` stays empty until a parser is found that needs one, and each entry must then
name the parser error it avoids.

FP16. Networks are strongly typed, so the builder's FP16 flag does not exist: an FP16 parser engine is
an FP16 ONNX. It is converted with ONNX Runtime's `onnxruntime.transformers.float16` (the maintained
successor of onnxconverter-common's converter, which Polygraphy's `ConvertToFp16` calls), keeping the
I/O FP32 and the tool's default block list of precision-sensitive ops (TopK, Range, CumSum, Min/Max, ...)
in FP32. onnxconverter-common 1.16 mistypes graph outputs that are also consumed inside the graph
(encoder_out feeds the CTC head, ctc_log_probs feeds TopK): the parser then rejects a Float x Half
MatMul. docs/baseline.md has the details.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from .backend import BACKEND_NAME, LOGGER, VERSION, create_network, describe, trt
from .engine import PlanInfo, build_plan, source_entry, write_manifest
from .profiles import ProfileSpec

log = logging.getLogger("netdef")

NETWORKS = ("encoder", "decoder")


class ParseError(RuntimeError):
    """The ONNX parser refused a graph; the message lists the parser's errors with their nodes."""


@dataclass(frozen=True)
class GraphFix:
    """An onnx-graphsurgeon pass applied before parsing, with the parser error it avoids."""

    name: str
    avoids: str  # the parser error message this fix exists for
    apply: Callable[[onnx.ModelProto], onnx.ModelProto]


# Empty on purpose: the installed parser parses the exported graphs unchanged (tested).
GRAPH_FIXES: tuple[GraphFix, ...] = ()


def convert_to_fp16(model: onnx.ModelProto, fp32_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """FP16 weights and activations, FP32 inputs/outputs, the tool's precision-sensitive ops kept FP32,
    and `fp32_ops` (ONNX op types) kept FP32 too."""
    from onnxruntime.transformers import float16

    return float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(fp32_ops),
    )


def fp16_tool() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} transformers.float16.convert_float_to_float16(keep_io_types=True)"


def prepare_model(path: Path, fp16: bool, fp32_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The ONNX model the parser sees: loaded, with the graph fixes applied, FP16-converted if asked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    model = onnx.load(str(path))
    for fix in GRAPH_FIXES:
        model = fix.apply(model)
    if fp16:
        model = convert_to_fp16(model, fp32_ops)
    return model


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        lines.append(f"node {err.node()} ({err.node_name() or '?'}, {err.node_operator() or '?'}): {err.desc()}")
    return "; ".join(lines) or "no error reported"


def parse_onnx(path: Path, fp16: bool, *, fp32_ops: tuple[str, ...] = ()):
    """Parse an ONNX file into a strongly typed network. Returns (builder, network, parser): the parser
    owns the network's weights, so keep it alive as long as the network is used. With fp16, `fp32_ops`
    lists ONNX op types to keep FP32 beyond the conversion tool's block list."""
    path = Path(path)
    builder = trt.Builder(LOGGER)  # TensorRT keeps one logger per process
    network = create_network(builder)
    parser = trt.OnnxParser(network, builder.logger)
    if not GRAPH_FIXES and not fp16:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        ok = parser.parse_from_file(str(path))
    else:
        # Parse from a file (not bytes) so that external data next to it would resolve.
        model = prepare_model(path, fp16, fp32_ops)
        with tempfile.TemporaryDirectory(prefix="parser_baseline.") as tmp:
            tmp_model = Path(tmp) / path.name
            onnx.save(model, str(tmp_model))
            ok = parser.parse_from_file(str(tmp_model))
    if not ok:
        raise ParseError(f"{path}: {describe()} ONNX parser failed{' (after FP16 conversion)' if fp16 else ''}: {_parser_errors(parser)}")
    return builder, network, parser


def _last_dim(network, input_name: str, path: Path) -> int:
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if t.name == input_name:
            dim = t.shape[-1]
            if dim <= 0:
                raise ValueError(f"{path}: input '{input_name}' needs a static last dimension, got shape {tuple(t.shape)}")
            return dim
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    raise ValueError(f"{path}: no input '{input_name}' (inputs: {names})")


def network_ranges(network_name: str, network, profile: ProfileSpec, path: Path):
    """The shape ranges netdef builds use for the same network: from the profile and the model's sizes."""
    if network_name == "encoder":
        return profile.encoder_ranges(_last_dim(network, "speech", path))
    return profile.decoder_ranges(_last_dim(network, "encoder_out", path))


def build_parser_engines(onnx_dir: Path, out_dir: Path, *, fp16: bool, profile: ProfileSpec, quiet: bool = False,
                         fp32_ops: tuple[str, ...] = ()) -> Path:
    """Build out_dir/encoder.plan and decoder.plan from onnx_dir/{encoder,decoder}.onnx with the ONNX
    parser and write out_dir/manifest.json (kind "parser"). Returns the manifest's path."""
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    profile.validate()
    paths = {name: onnx_dir / f"{name}.onnx" for name in NETWORKS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--onnx {onnx_dir}: missing {', '.join(missing)}")
    precision = "fp16" if fp16 else "fp32"
    plans: list[PlanInfo] = []
    for name, path in paths.items():
        if not quiet:
            log.info("parsing %s with the %s ONNX parser (%s)", path, describe(), precision)
        builder, network, parser = parse_onnx(path, fp16, fp32_ops=fp32_ops)
        plans.append(
            build_plan(
                builder,
                network,
                name,
                network_ranges(name, network, profile, path),
                out_dir / f"{name}.plan",
                extra={"source": path.name},
                quiet=quiet,
            )
        )
        del parser  # the plan is written; the parser may release the weights now
    extra = {
        "parser": {
            "backend": BACKEND_NAME,
            "backend_version": VERSION,
            "graph_fixes": [fix.name for fix in GRAPH_FIXES],
            "fp16_conversion": fp16_tool() if fp16 else None,
            "fp16_extra_fp32_ops": list(fp32_ops) if fp16 else [],
        }
    }
    sources = {p.name: source_entry(p) for p in paths.values()}
    return write_manifest(out_dir, kind="parser", precision=precision, plans=plans, sources=sources, extra=extra)
