"""The parser baseline: the exported WeNet graphs parse unfixed, FP16 conversion keeps the interface,
the engines are built with the netdef profiles and described by the shared manifest."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from netdef.backend import BACKEND_NAME, VERSION
from netdef.parser_baseline import GRAPH_FIXES, ParseError, build_parser_engines, convert_to_fp16, parse_onnx
from netdef.profiles import ProfileSpec

PROFILE = ProfileSpec()
ELEM_TO_NP = {TensorProto.FLOAT: np.float32, TensorProto.INT32: np.int32, TensorProto.INT64: np.int64}
TRT_TO_NP = {"float": np.float32, "int32": np.int32, "int64": np.int64}


def onnx_io(model: onnx.ModelProto):
    """name -> NumPy dtype of the graph's inputs and outputs."""
    io = lambda values: {v.name: np.dtype(ELEM_TO_NP[v.type.tensor_type.elem_type]) for v in values}
    return io(model.graph.input), io(model.graph.output)


def network_io(network):
    dtype = lambda t: np.dtype(TRT_TO_NP[str(t.dtype).split(".")[-1].lower()])
    inputs = {network.get_input(i).name: dtype(network.get_input(i)) for i in range(network.num_inputs)}
    outputs = {network.get_output(i).name: dtype(network.get_output(i)) for i in range(network.num_outputs)}
    return inputs, outputs


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("network_name", ["encoder", "decoder"])
def test_unfixed_graph_parses_with_the_onnx_interface(tiny_model, network_name, fp16):
    """No graph fix is applied, and the installed parser takes the exported graphs as they are; the
    parsed network keeps the ONNX inputs and outputs with their dtypes (FP32 I/O in FP16 too)."""
    assert GRAPH_FIXES == ()
    path = getattr(tiny_model, f"{network_name}_onnx")
    builder, network, parser = parse_onnx(path, fp16=fp16)
    assert network.num_layers > 50
    assert network_io(network) == onnx_io(onnx.load(str(path), load_external_data=False))


def test_the_2022_failure_is_in_the_parsed_graph(tiny_model):
    """The construct TensorRT 8.2 could not parse (Not_30, Slice_79, Slice_84: Not and Slice on the bool
    padding mask, subsampled as mask[:, :, :-2:2][:, :, :-2:2]) is present in the graph the test above
    parses unfixed."""
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_model.encoder_onnx))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    on_bool = [n for n in graph.node if n.op_type in ("Not", "Slice") and types.get(n.input[0]) == TensorProto.BOOL]
    assert {n.op_type for n in on_bool} == {"Not", "Slice"}
    assert sum(n.op_type == "Slice" and "embed" in n.name for n in on_bool) == 2  # the x4 subsampling's two slices


def test_fp16_conversion_keeps_io_and_the_block_list_fp32(tiny_model):
    model = onnx.load(str(tiny_model.encoder_onnx))
    converted = onnx.shape_inference.infer_shapes(convert_to_fp16(model))
    assert onnx_io(converted) == onnx_io(model)
    large = [t for t in converted.graph.initializer if np.prod(t.dims) >= 128]
    assert large and all(t.data_type in (TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32) for t in large)
    types = {v.name: v.type.tensor_type.elem_type for v in [*converted.graph.value_info, *converted.graph.input, *converted.graph.output]}
    topk = [n for n in converted.graph.node if n.op_type == "TopK"]
    assert topk and all(types[n.input[0]] == TensorProto.FLOAT for n in topk), "TopK (in the block list) must stay FP32"
    matmuls = [n for n in converted.graph.node if n.op_type == "MatMul"]
    assert all(types.get(n.output[0]) == TensorProto.FLOAT16 for n in matmuls)
    # op types the caller names are kept FP32 as well
    softmax_fp16 = [n for n in converted.graph.node if n.op_type == "LogSoftmax"]
    assert softmax_fp16 and all(types[n.output[0]] == TensorProto.FLOAT16 for n in softmax_fp16)
    kept = onnx.shape_inference.infer_shapes(convert_to_fp16(model, fp32_ops=("LogSoftmax",)))
    kept_types = {v.name: v.type.tensor_type.elem_type for v in [*kept.graph.value_info, *kept.graph.output]}
    assert all(kept_types[n.output[0]] == TensorProto.FLOAT for n in kept.graph.node if n.op_type == "LogSoftmax")


def test_onnxconverter_common_conversion_is_rejected(tiny_model, tmp_path):
    """Why the FP16 conversion is ONNX Runtime's: onnxconverter-common 1.16 (what Polygraphy's
    ConvertToFp16 calls) feeds the FP32 graph output encoder_out into the FP16 CTC MatMul, and the
    strongly typed parser refuses the mixed types. If this starts passing, docs/baseline.md is out of date."""
    from onnxconverter_common import float16

    converted = float16.convert_float_to_float16(onnx.load(str(tiny_model.encoder_onnx)), keep_io_types=True)
    path = tmp_path / "encoder.onnxconverter-common.fp16.onnx"
    onnx.save(converted, str(path))
    with pytest.raises(ParseError, match=r"MatMul.*same input types"):
        parse_onnx(path, fp16=False)  # already FP16: parse it as it is


def test_build_writes_plans_and_manifest(tiny_model, tmp_path):
    onnx_dir = tiny_model.encoder_onnx.parent
    manifest_path = build_parser_engines(onnx_dir, tmp_path / "engines", fp16=True, profile=PROFILE, quiet=True)
    manifest = json.loads(manifest_path.read_text())
    assert manifest_path == tmp_path / "engines" / "manifest.json"
    assert (manifest["kind"], manifest["precision"], manifest["backend"], manifest["backend_version"]) == ("parser", "fp16", BACKEND_NAME, VERSION)
    assert manifest["parser"]["graph_fixes"] == [] and "onnxruntime" in manifest["parser"]["fp16_conversion"]
    assert manifest["parser"]["fp16_extra_fp32_ops"] == []
    for name in ("encoder", "decoder"):
        source = tiny_model.encoder_onnx if name == "encoder" else tiny_model.decoder_onnx
        assert manifest["sources"][f"{name}.onnx"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        entry = manifest["engines"][name]
        plan = (tmp_path / "engines" / f"{name}.plan").read_bytes()
        assert entry["plan_bytes"] == len(plan) and entry["plan_sha256"] == hashlib.sha256(plan).hexdigest()
        assert entry["layers"] > 50 and entry["build_s"] > 0
    # the same profiles a netdef build uses: from ProfileSpec and the model's sizes (tiny: 80 features, d 128)
    as_lists = lambda ranges: {k: [list(b) for b in v] for k, v in ranges.items()}
    assert manifest["engines"]["encoder"]["profiles"] == [as_lists(PROFILE.encoder_ranges(80))]
    assert manifest["engines"]["decoder"]["profiles"] == [as_lists(PROFILE.decoder_ranges(128))]
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == ["decoder.plan", "encoder.plan", "manifest.json"]


def test_missing_onnx_is_named_and_nothing_is_written(tiny_model, tmp_path):
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    shutil.copy(tiny_model.encoder_onnx, onnx_dir / "encoder.onnx")
    with pytest.raises(FileNotFoundError, match=r"--onnx .*: missing .*decoder\.onnx"):
        build_parser_engines(onnx_dir, tmp_path / "out", fp16=False, profile=PROFILE, quiet=True)
    assert not (tmp_path / "out").exists()


def test_parser_error_names_the_node(tmp_path):
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="the_bad_node", domain="example.custom")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("example.custom", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ParseError, match=r"bad\.onnx: .* ONNX parser failed: node 0 \(the_bad_node, NoSuchOp\)"):
        parse_onnx(path, fp16=False)
    with pytest.raises(FileNotFoundError, match=r"nothing\.onnx: no such ONNX file"):
        parse_onnx(tmp_path / "nothing.onnx", fp16=False)
