"""The WeNet encoder and decoder as TensorRT's ONNX parser builds them, evaluated on the CPU with
netdef.evaluator on the export's cases, against ONNX Runtime running the same ONNX files."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from netdef.backend import create_network, trt
from netdef.evaluator import evaluate

# (network, batch, sequence) per model: the tiny model on all 9 hackathon cases, the aishell model on
# the diagonal (1x16, 4x64, 16x256), so the file stays around a minute on CI's 2 cores
HACKATHON = [(b, t) for b in (1, 4, 16) for t in (16, 64, 256)]
CASES = {
    "tiny": [(net, b, t) for net in ("encoder", "decoder") for b, t in HACKATHON],
    "aishell": [(net, b, t) for net in ("encoder", "decoder") for b, t in ((1, 16), (4, 64), (16, 256))],
}
# max |diff| bounds from the issue: float outputs of the encoder / decoder, integer outputs exact
TOLERANCE = {"encoder": 1e-4, "decoder": 1e-3}


# TensorRT keeps the first logger a process registers and uses it from then on: it must never be freed
from netdef.backend import LOGGER  # noqa: E402 - the one process-wide logger


def parse(onnx_path):
    builder = trt.Builder(LOGGER)
    network = create_network(builder)
    parser = trt.OnnxParser(network, LOGGER)
    ok = parser.parse_from_file(str(onnx_path))
    assert ok, [parser.get_error(i).desc() for i in range(parser.num_errors)]
    return builder, parser, network  # all three must stay alive while the network is used


def check_case(paths, net_name, batch, seq):
    onnx_path = paths.encoder_onnx if net_name == "encoder" else paths.decoder_onnx
    _keep = parse(onnx_path)
    network = _keep[2]
    cases = np.load(paths.cases)
    prefix = f"{net_name}.b{batch}.t{seq}."
    feed = {}
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        feed[name] = cases[prefix + name]
    got = evaluate(network, feed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    assert set(reference) <= set(got)
    for name, want in reference.items():
        have = got[name]
        assert have.shape == want.shape, name
        if want.dtype.kind == "f":
            assert have.dtype == want.dtype, name
            err = float(np.abs(have.astype(np.float64) - want).max())
            assert err < TOLERANCE[net_name], f"{net_name} b{batch} t{seq} {name}: max |diff| {err:.3g}"
        else:
            assert have.dtype.kind == want.dtype.kind, name
            np.testing.assert_array_equal(have, want, err_msg=f"{net_name} b{batch} t{seq} {name}")


@pytest.mark.parametrize("net_name, batch, seq", CASES["tiny"])
def test_parsed_tiny_matches_onnxruntime(tiny_model, net_name, batch, seq):
    check_case(tiny_model, net_name, batch, seq)


@pytest.mark.parametrize("net_name, batch, seq", CASES["aishell"])
def test_parsed_aishell_matches_onnxruntime(aishell_model, net_name, batch, seq):
    check_case(aishell_model, net_name, batch, seq)
