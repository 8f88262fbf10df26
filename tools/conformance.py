"""Check the network evaluator against ONNX's own backend node tests.

    python tools/conformance.py [--json OUT] [--filter SUBSTRING] [--build] [--cache DIR] [--onnx-version V]

Each test (`onnx/backend/test/data/node/<test>/model.onnx` with `test_data_set_*/`) is parsed with
TensorRT's ONNX parser; the parsed network is evaluated on the test's inputs with
netdef.evaluator and compared with the test's expected outputs. A test ends up:

- rejected:    TensorRT's parser refused the model (not the evaluator's business);
- passed:      every output matches (floats within rtol 1e-3 / atol 1e-5, FP16 rtol 1e-2 / atol 1e-3,
               integers and booleans exactly);
- failed:      an output differs, or the evaluation raised (the error says which layer);
- unsupported: the network has a layer type/mode the evaluator does not implement (named);
- deviation:   TensorRT itself documents a result other than ONNX's expected one (KNOWN_DEVIATIONS,
               with the reference); the evaluator follows TensorRT; never counted as passed.

Exit status: 0, or 1 when any test failed (2 when the node tests cannot be fetched).

The node tests are not in the onnx wheel; they come from the onnx source distribution on PyPI,
fetched once with `pip download` into <repo>/.cache/ (only the node test folder is extracted).
onnx releases after 1.20 no longer ship the test data in their sdist, so when the installed
version's sdist has none the tool falls back to onnx 1.20.1 (the last one that does) and says so.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FALLBACK_ONNX_VERSION = "1.20.1"
NODE_DATA = "onnx/backend/test/data/node/"

# Tests where TensorRT documents a result other than ONNX's expected output. The evaluator
# follows TensorRT's documented semantics, so these are listed, never counted as passed.
# test name -> (what TensorRT does, reference)
OPERATORS_MD = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"
TRILU_SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/main/onnxOpImporters.cpp (Trilu importer)"
LPNORM_SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/main/onnxOpImporters.cpp (LpNormalization importer)"
_TRILU = (
    "TensorRT's parser reads Trilu's `upper` with default 0 where ONNX's default is 1: a Trilu without "
    "the attribute computes the lower triangle",
    TRILU_SOURCE,
)
_POOL_CEIL = (
    "with ceil_mode TensorRT keeps a last window that starts in the end padding (its declared output "
    "shape is one larger than ONNX's); ONNX drops that window",
    OPERATORS_MD + " (AveragePool/MaxPool) and the output shape TensorRT's own shape inference declares",
)
_QUANT_ZERO_POINT = (
    "TensorRT quantizes to signed INT8 and requires y_zero_point 0; the uint8 / non-zero zero point "
    "of the test is not honoured",
    OPERATORS_MD + " (QuantizeLinear: `y_zero_point` must be 0)",
)
_RNN_BATCH_FIRST = (
    "TensorRT's parser ignores `layout=1` (batch-first) of RNN/GRU/LSTM: its loop iterates over axis 0 "
    "of X, the batch, carrying the hidden state from one sequence to the next",
    "https://github.com/onnx/onnx-tensorrt/blob/main/onnxOpImporters.cpp (RNN/GRU/LSTM importers; "
    "the parsed network's ILoop iterator runs on axis 0 of X)",
)
KNOWN_DEVIATIONS: dict[str, tuple[str, str]] = {
    "test_nonmaxsuppression_two_classes": (
        "TensorRT orders the selected boxes by batch, then by decreasing score across classes; ONNX "
        "lists them class by class (the same rows in another order)",
        "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Graph/Layers.html "
        "(INMSLayer: SelectedIndices ordering)",
    ),
    "test_simple_rnn_batchwise": _RNN_BATCH_FIRST,
    "test_gru_batchwise": _RNN_BATCH_FIRST,
    "test_lstm_batchwise": _RNN_BATCH_FIRST,
    **{name: _TRILU for name in (
        "test_triu", "test_triu_neg", "test_triu_one_row", "test_triu_out_neg_out", "test_triu_out_pos",
        "test_triu_pos", "test_triu_square", "test_triu_square_neg",
    )},
    "test_l2normalization_axis_0": (
        "TensorRT's LpNormalization adds (norm == 0) to the norm, so an all-zero slice gives 0 where "
        "ONNX expects 0/0 = NaN",
        LPNORM_SOURCE,
    ),
    "test_averagepool_2d_ceil_last_window_starts_on_pad": _POOL_CEIL,
    "test_maxpool_2d_ceil_output_size_reduce_by_one": _POOL_CEIL,
    "test_quantizelinear": _QUANT_ZERO_POINT,
    "test_quantizelinear_axis": _QUANT_ZERO_POINT,
}


def log(message: str) -> None:
    print(f"[conformance] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- fetching the test data


def _download_sdist(version: str, sdist_dir: Path) -> Path:
    sdist = sdist_dir / f"onnx-{version}.tar.gz"
    if sdist.exists():
        return sdist
    sdist_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading the onnx {version} source distribution from PyPI (pip download, ~6 MB)")
    # --no-binary onnx (not :all:) so pip fetches the onnx sdist without compiling its build tools
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "onnx",
           f"onnx=={version}", "-d", str(sdist_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not sdist.exists():
        raise RuntimeError(f"pip download of onnx=={version} failed: {result.stderr.strip()[-500:]}")
    return sdist


def _extract_node_tests(sdist: Path, version: str, target: Path) -> bool:
    """Extract only the node test folder into `target` (atomically); False if the sdist has none."""
    prefix = f"onnx-{version}/{NODE_DATA}"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        if not any(m.name.endswith("/model.onnx") for m in members):
            return False
        log(f"extracting {sum(m.isfile() for m in members)} files of {NODE_DATA} from {sdist.name}")
        from netdef.files import atomic_dir

        with atomic_dir(target) as tmp:
            for m in members:
                m.name = m.name[len(prefix):]
                if m.name:
                    tar.extract(m, tmp, filter="data")
    return True


def fetch_node_tests(cache: Path, version: str | None = None) -> tuple[Path, str]:
    """Folder holding the node tests (one subfolder per test) and the onnx version they come from."""
    import onnx

    candidates = [version] if version else [onnx.__version__, FALLBACK_ONNX_VERSION]
    for v in dict.fromkeys(candidates):
        target = cache / f"onnx-node-tests-{v}"
        if (target / "test_abs" / "model.onnx").exists():
            return target, v
        marker = cache / f"onnx-{v}.no-node-tests"
        if marker.exists():
            log(f"onnx {v}'s sdist has no node tests (cached answer), trying the next version")
            continue
        sdist = _download_sdist(v, cache / "onnx-sdist")
        if _extract_node_tests(sdist, v, target):
            return target, v
        log(f"onnx {v}'s sdist ships no {NODE_DATA}; falling back to onnx {FALLBACK_ONNX_VERSION}")
        marker.touch()
    raise RuntimeError(f"no onnx source distribution among {candidates} ships {NODE_DATA}")


# ---------------------------------------------------------------- running one test


def _op_names() -> list[str]:
    import onnx.defs

    return sorted({s.name for s in onnx.defs.get_all_schemas_with_history()}, key=len, reverse=True)


def op_of_test(name: str, ops: list[str]) -> str:
    """The ONNX op a node test is about, from its name (test_reduce_sum_... -> ReduceSum)."""
    key = name[len("test_"):].replace("_", "").lower()
    for op in ops:
        if key.startswith(op.lower()):
            return op
    return name[len("test_"):].split("_")[0]


def _load_tensors(folder: str, kind: str) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    arrays = []
    for path in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")), key=lambda p: int(re.findall(r"(\d+)\.pb$", p)[0])):
        proto = onnx.TensorProto()
        with open(path, "rb") as fh:
            proto.ParseFromString(fh.read())
        arrays.append(numpy_helper.to_array(proto))
    return arrays


def _tolerance(dtype: np.dtype) -> tuple[float, float]:
    if dtype == np.float16:
        return 1e-2, 1e-3
    return 1e-3, 1e-5


def compare(name: str, got: np.ndarray, expected: np.ndarray) -> str | None:
    """None when `got` matches `expected`, else one line saying how it differs."""
    if got.shape != expected.shape:
        return f"output '{name}': shape {list(got.shape)}, expected {list(expected.shape)}"
    if expected.dtype.kind in "fc" or expected.dtype.kind == "V":
        got64, exp64 = got.astype(np.float64), expected.astype(np.float64)
        rtol, atol = _tolerance(expected.dtype)
        ok = np.isclose(got64, exp64, rtol=rtol, atol=atol, equal_nan=True)
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            diff = np.nanmax(np.abs(np.where(ok, 0, got64 - exp64)))
            return (f"output '{name}': {int((~ok).sum())} of {ok.size} values differ, max |diff| {diff:.3g} "
                    f"(first at {tuple(int(i) for i in bad)}: {got64[tuple(bad)]!r} vs {exp64[tuple(bad)]!r})")
        return None
    if got.dtype.kind != expected.dtype.kind and not (got.dtype.kind in "iu" and expected.dtype.kind in "iu"):
        return f"output '{name}': dtype {got.dtype.name}, expected {expected.dtype.name}"
    if not np.array_equal(got.astype(expected.dtype), expected):
        return f"output '{name}': {int((got.astype(expected.dtype) != expected).sum())} of {expected.size} values differ"
    return None


def run_test(folder: Path, builder, logger) -> dict:
    """Parse, evaluate and compare one node test; returns its record for the report."""
    from netdef.backend import create_network, trt
    from netdef.evaluator import UnsupportedLayerError, evaluate

    network = create_network(builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(folder / "model.onnx")):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        return {"status": "rejected", "error": (errors[0] if errors else "parser returned false").splitlines()[0][:300]}
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    onnx_inputs = [i.name for i in graph.input if i.name not in initializers]
    onnx_outputs = [o.name for o in graph.output]
    net_inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    from netdef.evaluator.dtypes import np_dtype

    datasets = sorted(folder.glob("test_data_set_*"))
    for dataset in datasets:
        inputs = dict(zip(onnx_inputs, _load_tensors(str(dataset), "input")))
        feed = {}
        renamed = [k for k in net_inputs if k not in inputs]
        unused = [k for k in inputs if k not in net_inputs]
        if len(renamed) == 1 and len(unused) == 1:  # the parser renamed one input (e.g. cond -> cond_in)
            inputs[renamed[0]] = inputs.pop(unused[0])
        for key, tensor in net_inputs.items():
            if key not in inputs:
                continue  # evaluate() reports it (after any unsupported layer, which comes first)
            value = inputs[key]
            want = np_dtype(tensor.dtype)
            if want is not None and value.dtype != want:
                # the parser declares some inputs narrower (e.g. int64 -> int32, double -> float)
                value = value.astype(want)
            feed[key] = value
        expected = _load_tensors(str(dataset), "output")
        try:
            outputs = evaluate(network, feed)
        except UnsupportedLayerError as exc:
            return {"status": "unsupported", "error": str(exc), "layer_type": exc.layer_type}
        except Exception as exc:  # noqa: BLE001 - any other error is a failure, reported with its message
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
        for out_name, want in zip(onnx_outputs, expected):
            if out_name not in outputs:
                return {"status": "failed", "error": f"output '{out_name}' is not a network output"}
            problem = compare(out_name, outputs[out_name], want)
            if problem:
                return {"status": "failed", "error": f"{dataset.name}: {problem}"}
    return {"status": "passed", "datasets": len(datasets)}


_LOGGER = None


def _recording_logger():
    """A TensorRT logger that keeps error messages (the builder reports why it refuses a network).
    One per process, never freed: TensorRT keeps using the first logger a process registers."""
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    from netdef.backend import trt

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)

    _LOGGER = RecordingLogger()
    return _LOGGER


def builder_verdict(folder: Path, builder, logger) -> str:
    """Whether TensorRT's builder accepts the parsed network, with a profile pinned to the test's
    inputs: "builds", or "refuses: <its first error>" (a network it refuses computes nothing)."""
    from netdef.backend import create_network, trt

    network = create_network(builder)
    parser = trt.OnnxParser(network, logger)
    parser.parse_from_file(str(folder / "model.onnx"))
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    inputs = dict(zip(names, _load_tensors(str(sorted(folder.glob("test_data_set_*"))[0]), "input")))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        value = inputs.get(tensor.name)
        if value is None:
            continue
        if tensor.is_shape_tensor:
            v = [int(x) for x in np.asarray(value).reshape(-1)]
            profile.set_shape_input(tensor.name, v, v, v)
        else:
            profile.set_shape(tensor.name, value.shape, value.shape, value.shape)
    config.add_optimization_profile(profile)
    logger.errors.clear()
    plan = builder.build_serialized_network(network, config)
    if plan is not None:
        return "builds"
    return "refuses: " + (logger.errors[0] if logger.errors else "no plan").splitlines()[0][:300]


def run_all(tests_dir: Path, pattern: str | None = None, progress: bool = True, build: bool = False) -> dict:
    from netdef.backend import describe, trt

    logger = _recording_logger()
    builder = trt.Builder(logger)
    ops = _op_names()
    records = []
    folders = sorted(p for p in tests_dir.iterdir() if (p / "model.onnx").exists())
    if pattern:
        folders = [p for p in folders if pattern in p.name]
    start = time.perf_counter()
    for i, folder in enumerate(folders):
        record = {"name": folder.name, "op": op_of_test(folder.name, ops)}
        record.update(run_test(folder, builder, logger))
        if folder.name in KNOWN_DEVIATIONS and record["status"] in ("passed", "failed"):
            behaviour, reference = KNOWN_DEVIATIONS[folder.name]
            record.update(status="deviation", deviation=behaviour, reference=reference)
        if record["status"] == "deviation" or (build and record["status"] != "rejected"):
            record["builder"] = builder_verdict(folder, builder, logger)
        records.append(record)
        if progress and (i + 1) % 200 == 0:
            log(f"{i + 1}/{len(folders)} tests ({time.perf_counter() - start:.0f} s)")
    counts = collections.Counter(r["status"] for r in records)
    summary = {
        "total": len(records),
        "accepted": len(records) - counts["rejected"],
        "passed": counts["passed"],
        "failed": counts["failed"],
        "unsupported": counts["unsupported"],
        "deviations": counts["deviation"],
        "rejected": counts["rejected"],
    }
    if build:  # --build: how many accepted networks TensorRT's builder then refuses, by status
        refused = collections.Counter(r["status"] for r in records if r.get("builder", "").startswith("refuses"))
        summary["builder_refused"] = dict(refused)
    by_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in records:
        by_op[r["op"]][r["status"]] += 1
    return {
        "summary": summary,
        "backend": describe(),
        "seconds": round(time.perf_counter() - start, 1),
        "by_op": {op: dict(c) for op, c in sorted(by_op.items())},
        "tests": records,
    }


def print_report(report: dict, stream=sys.stdout) -> None:
    s = report["summary"]
    print(f"backend: {report['backend']}; {s['total']} node tests in {report['seconds']} s", file=stream)
    print("by op (passed/accepted; rejected by the parser not shown):", file=stream)
    for op, counts in report["by_op"].items():
        accepted = sum(v for k, v in counts.items() if k != "rejected")
        if accepted:
            extra = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("passed", "rejected"))
            print(f"  {op:28s} {counts.get('passed', 0)}/{accepted}" + (f"  ({extra})" if extra else ""), file=stream)
    for status in ("failed", "unsupported", "deviation"):
        for r in report["tests"]:
            if r["status"] == status:
                detail = (r.get("error", "") if status != "deviation"
                          else f"{r['deviation']} [{r['reference']}] (TensorRT's builder {r['builder']})")
                print(f"{status.upper():12s} {r['name']}: {detail}", file=stream)
    if "builder_refused" in s:
        print(f"TensorRT's builder refuses, among the accepted: {s['builder_refused']}", file=stream)
    print(
        f"accepted {s['accepted']}, passed {s['passed']}, failed {s['failed']}, unsupported {s['unsupported']}, "
        f"deviations {s['deviations']}, rejected by the parser {s['rejected']} (total {s['total']})",
        file=stream,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the summary and every test's result to this JSON file")
    ap.add_argument("--filter", help="only tests whose name contains this")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache", help="where the onnx sdist and node tests are kept")
    ap.add_argument("--build", action="store_true",
                    help="also ask TensorRT's builder whether it accepts each parsed network (about a minute)")
    ap.add_argument("--onnx-version", help="take the node tests from this onnx release (default: installed, else 1.20.1)")
    args = ap.parse_args(argv)
    try:
        tests_dir, version = fetch_node_tests(args.cache, args.onnx_version)
    except Exception as exc:  # noqa: BLE001
        print(f"conformance: cannot get ONNX's node tests: {exc}", file=sys.stderr)
        return 2
    log(f"node tests of onnx {version} from {tests_dir}")
    report = run_all(tests_dir, args.filter, build=args.build)
    report["onnx_tests_version"] = version
    print_report(report)
    if args.json:
        from netdef.engine import atomic_write_json

        atomic_write_json(args.json, report)
    return 1 if report["summary"]["failed"] else 0  # a failed test is an evaluator bug


if __name__ == "__main__":
    sys.exit(main())
