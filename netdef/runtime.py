"""Running a built engine from Python: TensorRT's runtime on cuda-python.

Everything that decides whether a run may start is pure Python and NumPy, testable without a GPU:
reading the manifest, spotting a stale engine (weights, config or ONNX changed since the build, another
TensorRT), validating inputs against the profile and the ONNX interface, converting int32/int64 at the
edges, and sizing device buffers from the profile's maximum shapes.

`EngineRunner` is the GPU part: it deserializes the plan, allocates every buffer once for the profile's
maximum, copies through pinned staging buffers on its own stream, runs `execute_async_v3` or replays a
CUDA graph captured per input shape, and times runs with CUDA events. No machine of this project can
execute a TensorRT engine, so that part has not run (docs/baseline.md).

    runner = EngineRunner("out/engines/netdef-fp16", "encoder")
    out = runner.run({"speech": speech, "speech_lengths": lengths})
"""
from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .backend import BACKEND_NAME, LOGGER, VERSION, describe, trt
from .engine import MANIFEST_FORMAT, MANIFEST_NAME, sha256_file
from .profiles import subsampled_length

# The ONNX interface (shared/wenet.md): the dtypes a caller passes and gets back, whatever an engine
# uses inside (a netdef engine may carry token ids or best_index as int32).
INTERFACE: dict[str, dict[str, dict[str, np.dtype]]] = {
    "encoder": {
        "inputs": {"speech": np.dtype(np.float32), "speech_lengths": np.dtype(np.int32)},
        "outputs": {
            "encoder_out": np.dtype(np.float32),
            "encoder_out_lens": np.dtype(np.int32),
            "ctc_log_probs": np.dtype(np.float32),
            "beam_log_probs": np.dtype(np.float32),
            "beam_log_probs_idx": np.dtype(np.int64),
        },
    },
    "decoder": {
        "inputs": {
            "encoder_out": np.dtype(np.float32),
            "encoder_out_lens": np.dtype(np.int32),
            "hyps_pad_sos_eos": np.dtype(np.int64),
            "hyps_lens_sos": np.dtype(np.int32),
            "ctc_score": np.dtype(np.float32),
        },
        "outputs": {"decoder_out": np.dtype(np.float32), "best_index": np.dtype(np.int64)},
    },
}

# Length inputs: (the tensor whose axis they count, that axis, the largest valid value minus that axis' size).
# hyps_lens_sos counts sos + tokens, at most hyp_len - 1 (the eos slot always follows).
LENGTHS: dict[str, tuple[str, int, int]] = {
    "speech_lengths": ("speech", 1, 0),
    "encoder_out_lens": ("encoder_out", 1, 0),
    "hyps_lens_sos": ("hyps_pad_sos_eos", 2, -1),
}

# Manifest dtype names (engine._io_description: str(trt.DataType).split('.')[-1].lower()) -> NumPy.
_MANIFEST_DTYPES = {
    "float": np.float32,
    "half": np.float16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
    "int8": np.int8,
    "uint8": np.uint8,
}


class ManifestError(ValueError):
    """manifest.json is missing, malformed, or describes other engines than asked for."""


class StaleEngineError(RuntimeError):
    """The engine no longer matches what it was built from, or was built by another TensorRT."""


class InputError(ValueError):
    """An input the engine cannot take: missing, unexpected, wrong dtype, rank, shape or length."""


class RuntimeUnavailable(RuntimeError):
    """No CUDA device or TensorRT runtime that can execute engines here."""


# ---------------------------------------------------------------------------------------------- manifest


def load_manifest(engine_dir: str | Path) -> dict:
    path = Path(engine_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest; build the engines with `python -m netdef.build`") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    for key in ("kind", "backend", "backend_version", "precision", "sources", "engines"):
        if key not in manifest:
            raise ManifestError(f"{path}: missing field '{key}'")
    return manifest


def stale_reasons(manifest: dict, engine_dir: str | Path, *, backend: str = BACKEND_NAME, version: str = VERSION, check_sources: bool = True) -> list[str]:
    """Why the engines in engine_dir must be rebuilt before they are run; empty when they are current."""
    engine_dir = Path(engine_dir)
    reasons = []
    built = (manifest["backend"], manifest["backend_version"])
    if built != (backend, version):
        reasons.append(f"built by {built[0]} {built[1]}, this process runs {backend} {version}")
    for network, entry in manifest["engines"].items():
        plan = engine_dir / entry["plan"]
        if not plan.is_file():
            reasons.append(f"{network}: plan {plan} is missing")
        elif sha256_file(plan) != entry["plan_sha256"]:
            reasons.append(f"{network}: plan {plan} changed since the build (sha256 differs from the manifest)")
    if check_sources:
        for name, source in manifest["sources"].items():
            path = Path(source["path"])
            if not path.is_file():
                reasons.append(f"source {name} ({path}) is gone; cannot tell whether the engine is current")
            elif sha256_file(path) != source["sha256"]:
                reasons.append(
                    f"source {name} ({path}) changed since the build "
                    f"(sha256 {source['sha256'][:12]}... in the manifest, {sha256_file(path)[:12]}... now)"
                )
    return reasons


def check_manifest(engine_dir: str | Path, *, backend: str = BACKEND_NAME, version: str = VERSION, check_sources: bool = True) -> dict:
    """The manifest of engine_dir, or StaleEngineError listing every reason it is out of date."""
    manifest = load_manifest(engine_dir)
    reasons = stale_reasons(manifest, engine_dir, backend=backend, version=version, check_sources=check_sources)
    if reasons:
        raise StaleEngineError(
            f"{Path(engine_dir)}: stale {manifest['kind']} engines: " + "; ".join(reasons) + ". Rebuild them with `python -m netdef.build`."
        )
    return manifest


# ---------------------------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorSpec:
    name: str
    engine_dtype: np.dtype  # what the engine binds
    interface_dtype: np.dtype  # what the caller passes / gets back
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    min_shape: tuple[int, ...] | None = None  # inputs: the profile's bounds
    max_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EngineSpec:
    network: str
    plan: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @classmethod
    def from_manifest(cls, manifest: dict, network: str) -> "EngineSpec":
        if network not in INTERFACE:
            raise ManifestError(f"network '{network}': expected one of {sorted(INTERFACE)}")
        entry = manifest["engines"].get(network)
        if entry is None:
            raise ManifestError(f"manifest has no '{network}' engine (it has {sorted(manifest['engines'])})")
        interface = INTERFACE[network]
        profile = entry["profiles"][0]
        for side in ("inputs", "outputs"):
            if not isinstance(entry.get(side), dict):
                raise ManifestError(
                    f"{network} engine: manifest field '{side}' should map each tensor to its dtype and shape, "
                    f"got {type(entry.get(side)).__name__} {entry.get(side)!r}"
                )

        def spec(name: str, desc: dict, interface_dtypes: dict, is_input: bool) -> TensorSpec:
            if name not in interface_dtypes:
                raise ManifestError(f"{network} engine tensor '{name}' is not in the ONNX interface ({sorted(interface_dtypes)})")
            try:
                engine_dtype = np.dtype(_MANIFEST_DTYPES[desc["dtype"]])
            except KeyError:
                raise ManifestError(f"{network} engine tensor '{name}': unknown dtype {desc['dtype']!r}") from None
            lo = hi = None
            if is_input:
                if name not in profile:
                    raise ManifestError(f"{network} engine input '{name}' has no profile range in the manifest")
                lo, _, hi = (tuple(b) for b in profile[name])
            return TensorSpec(name, engine_dtype, interface_dtypes[name], tuple(desc["shape"]), lo, hi)

        inputs = {n: spec(n, d, interface["inputs"], True) for n, d in entry["inputs"].items()}
        outputs = {n: spec(n, d, interface["outputs"], False) for n, d in entry["outputs"].items()}
        missing = sorted(set(interface["inputs"]) - set(inputs))
        if missing:
            raise ManifestError(f"{network} engine lacks interface inputs {missing}")
        return cls(network, entry["plan"], inputs, outputs)


def _convert(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast at the engine edge; integers must fit (an int64 token id above 2^31 is an error, not a wrap)."""
    if array.dtype == dtype:
        return array
    if np.issubdtype(dtype, np.integer) and array.size:
        info = np.iinfo(dtype)
        lo, hi = array.min(), array.max()
        if lo < info.min or hi > info.max:
            raise InputError(f"tensor '{name}': values {lo}..{hi} do not fit the engine's {dtype}")
    return array.astype(dtype)


def validate_inputs(spec: EngineSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check inputs against the interface and the profile; return them contiguous, in the engine's dtypes."""
    missing = sorted(set(spec.inputs) - set(inputs))
    unexpected = sorted(set(inputs) - set(spec.inputs))
    if missing or unexpected:
        raise InputError(f"{spec.network}: missing inputs {missing}, unexpected inputs {unexpected}; expected {sorted(spec.inputs)}")
    batch = None
    for name, t in spec.inputs.items():
        array = inputs[name]
        if not isinstance(array, np.ndarray):
            raise InputError(f"{spec.network} input '{name}': expected a NumPy array, got {type(array).__name__}")
        if array.dtype != t.interface_dtype:
            raise InputError(f"{spec.network} input '{name}': dtype {array.dtype}, expected {t.interface_dtype}")
        if array.ndim != len(t.max_shape):
            raise InputError(f"{spec.network} input '{name}': rank {array.ndim} (shape {array.shape}), expected rank {len(t.max_shape)}")
        if any(not lo <= d <= hi for d, lo, hi in zip(array.shape, t.min_shape, t.max_shape)):
            raise InputError(
                f"{spec.network} input '{name}': shape {array.shape} outside the engine's profile "
                f"(min {t.min_shape}, max {t.max_shape})"
            )
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise InputError(f"{spec.network} input '{name}': batch {array.shape[0]}, other inputs have batch {batch}")
    for name, (of, axis, offset) in LENGTHS.items():
        if name in inputs and of in inputs:
            lengths, limit = inputs[name], inputs[of].shape[axis] + offset
            if lengths.size and (lengths.min() < 1 or lengths.max() > limit):
                raise InputError(
                    f"{spec.network} input '{name}': lengths must be in 1..{limit} ('{of}' axis {axis} is "
                    f"{inputs[of].shape[axis]}), got {lengths.min()}..{lengths.max()}"
                )
    return {name: np.ascontiguousarray(_convert(name, inputs[name], t.engine_dtype)) for name, t in spec.inputs.items()}


def convert_outputs(spec: EngineSpec, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Engine outputs in the interface's dtypes (an int32 best_index comes back int64, FP16 as FP32)."""
    return {name: _convert(name, outputs[name], spec.outputs[name].interface_dtype) for name in outputs}


def max_output_shapes(spec: EngineSpec) -> dict[str, tuple[int, ...]]:
    """Output shapes at the profile's maximum inputs, from the ONNX interface's shape rules:
    encoder outputs are [B, T'(T), ...], decoder_out is [B, beam, hyp_len - 1, V], best_index [B]."""
    if spec.network == "encoder":
        b, t, _ = spec.inputs["speech"].max_shape
        dynamic = (b, subsampled_length(t))
    else:
        b, beam, hyp_len = spec.inputs["hyps_pad_sos_eos"].max_shape
        dynamic = (b, beam, hyp_len - 1)
    shapes = {}
    for name, t in spec.outputs.items():
        shape = tuple(dynamic[i] if d < 0 else d for i, d in enumerate(t.shape))
        if any(d < 0 for d in shape):
            raise ManifestError(f"{spec.network} output '{name}': cannot size dynamic shape {t.shape} from the profile")
        shapes[name] = shape
    return shapes


def buffer_sizes(spec: EngineSpec) -> dict[str, int]:
    """Bytes to allocate once per tensor so that every shape in the profile fits."""
    shapes = {n: t.max_shape for n, t in spec.inputs.items()} | max_output_shapes(spec)
    dtypes = {n: t.engine_dtype for n, t in {**spec.inputs, **spec.outputs}.items()}
    return {n: int(np.prod(shape, dtype=np.int64)) * dtypes[n].itemsize for n, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------- CUDA


def import_cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6) or the legacy `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise RuntimeUnavailable(f"cuda-python is not installed (`pip install cuda-python`): {exc}") from None
    return cudart


def _check(cudart, result, what: str):
    """cuda-python calls return (error, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cudart.cudaGetErrorString(err)[1]
        raise RuntimeError(f"{what}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_runtime_status() -> tuple[bool, str]:
    """(usable, why): whether this process can execute TensorRT engines on a CUDA device."""
    try:
        cudart = import_cudart()
    except RuntimeUnavailable as exc:
        return False, str(exc)
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return False, f"no CUDA device ({cudart.cudaGetErrorString(err)[1].decode() if int(err) else 'count 0'})"
    if not hasattr(trt, "Runtime"):
        return False, f"{describe()} has no runtime"
    return True, f"{describe()} on {count} CUDA device(s)"


class EngineRunner:
    """One engine, its execution context, and device buffers sized once for the profile's maximum."""

    def __init__(self, engine_dir: str | Path, network: str, *, check_sources: bool = True):
        self.engine_dir = Path(engine_dir)
        manifest = check_manifest(self.engine_dir, check_sources=check_sources)
        self.spec = EngineSpec.from_manifest(manifest, network)
        usable, why = gpu_runtime_status()
        if not usable:
            raise RuntimeUnavailable(f"cannot run {self.engine_dir / self.spec.plan}: {why}")
        self.cudart = cudart = import_cudart()
        self._runtime = trt.Runtime(LOGGER)
        self.engine = self._runtime.deserialize_cuda_engine((self.engine_dir / self.spec.plan).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{self.engine_dir / self.spec.plan}: {describe()} could not deserialize the plan (see its log above)")
        self._check_engine_io()
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}  # pinned staging views, one per tensor
        for name, nbytes in buffer_sizes(self.spec).items():
            self._device[name] = _check(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc {name} ({nbytes} bytes)")
            host_ptr = _check(cudart, cudart.cudaMallocHost(nbytes), f"cudaMallocHost {name}")
            self._host[name] = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(host_ptr)))
            if not self.context.set_tensor_address(name, int(self._device[name])):
                raise RuntimeError(f"{self.spec.network}: set_tensor_address('{name}') refused")
        self._graphs: dict[tuple, object] = {}  # input shapes -> instantiated CUDA graph
        self._shapes: tuple | None = None

    def _check_engine_io(self) -> None:
        for name, t in {**self.spec.inputs, **self.spec.outputs}.items():
            engine_dtype = np.dtype(_MANIFEST_DTYPES[str(self.engine.get_tensor_dtype(name)).split(".")[-1].lower()])
            if engine_dtype != t.engine_dtype:
                raise ManifestError(f"{self.spec.plan}: tensor '{name}' is {engine_dtype} in the plan, {t.engine_dtype} in the manifest")

    def _set_shapes(self, inputs: dict[str, np.ndarray]) -> tuple:
        shapes = tuple((name, a.shape) for name, a in inputs.items())
        if shapes != self._shapes:
            for name, a in inputs.items():
                if not self.context.set_input_shape(name, a.shape):
                    raise InputError(f"{self.spec.network} input '{name}': the engine refused shape {a.shape}")
            self._shapes = shapes
        return shapes

    def _copy_in(self, inputs: dict[str, np.ndarray]) -> None:
        cudart = self.cudart
        for name, a in inputs.items():
            staging = self._host[name][: a.nbytes]
            staging[:] = a.reshape(-1).view(np.byte)
            _check(cudart, cudart.cudaMemcpyAsync(self._device[name], staging.ctypes.data, a.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), f"copy {name} to the device")

    def _enqueue(self, shapes: tuple, cuda_graph: bool) -> None:
        cudart = self.cudart
        if not cuda_graph:
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError(f"{self.spec.network}: execute_async_v3 failed (see TensorRT's log)")
            return
        graph_exec = self._graphs.get(shapes)
        if graph_exec is None:
            if not self.context.is_stream_capturable(int(self.stream)):
                raise RuntimeError(f"{self.spec.network}: TensorRT says this engine cannot be captured into a CUDA graph on this stream")
            # One plain run first: TensorRT does its shape-dependent setup outside the capture.
            self._enqueue(shapes, cuda_graph=False)
            _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            _check(cudart, cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
            ok = self.context.execute_async_v3(int(self.stream))
            graph = _check(cudart, cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
            if not ok:
                raise RuntimeError(f"{self.spec.network}: execute_async_v3 failed during CUDA graph capture")
            graph_exec = _check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            cudart.cudaGraphDestroy(graph)  # the executable graph keeps what it needs
            self._graphs[shapes] = graph_exec
        _check(cudart, cudart.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def _copy_out(self) -> dict[str, np.ndarray]:
        cudart = self.cudart
        outputs = {}
        for name, t in self.spec.outputs.items():
            shape = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * t.engine_dtype.itemsize
            if nbytes > self._host[name].nbytes:
                raise RuntimeError(f"{self.spec.network} output '{name}': shape {shape} exceeds its buffer sized for the profile maximum")
            staging = self._host[name][:nbytes]
            _check(cudart, cudart.cudaMemcpyAsync(staging.ctypes.data, self._device[name], nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), f"copy {name} to the host")
            outputs[name] = (staging, shape, t.engine_dtype)
        _check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        raw = {name: s.view(dtype).reshape(shape).copy() for name, (s, shape, dtype) in outputs.items()}
        return convert_outputs(self.spec, raw)

    def run(self, inputs: Mapping[str, np.ndarray], *, cuda_graph: bool = False) -> dict[str, np.ndarray]:
        """Validate, copy in, execute (or replay this shape's CUDA graph), copy out; NumPy in, NumPy out."""
        prepared = validate_inputs(self.spec, inputs)
        shapes = self._set_shapes(prepared)
        self._copy_in(prepared)
        self._enqueue(shapes, cuda_graph)
        return self._copy_out()

    def time(self, inputs: Mapping[str, np.ndarray], *, warmup: int = 10, runs: int = 30, cuda_graph: bool = False) -> float:
        """Mean milliseconds of one inference (inputs already on the device), timed with CUDA events as the
        2022 hackathon did: `warmup` runs, then `runs` timed back to back."""
        cudart = self.cudart
        prepared = validate_inputs(self.spec, inputs)
        shapes = self._set_shapes(prepared)
        self._copy_in(prepared)
        for _ in range(warmup):
            self._enqueue(shapes, cuda_graph)
        start = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        end = _check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
        try:
            _check(cudart, cudart.cudaEventRecord(start, self.stream), "cudaEventRecord")
            for _ in range(runs):
                self._enqueue(shapes, cuda_graph)
            _check(cudart, cudart.cudaEventRecord(end, self.stream), "cudaEventRecord")
            _check(cudart, cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
            return float(_check(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")) / runs
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(end)

    def close(self) -> None:
        cudart = self.cudart
        for graph_exec in self._graphs.values():
            cudart.cudaGraphExecDestroy(graph_exec)
        self._graphs.clear()
        for ptr in self._device.values():
            cudart.cudaFree(ptr)
        for view in self._host.values():
            cudart.cudaFreeHost(view.ctypes.data)
        self._device.clear()
        self._host.clear()
        cudart.cudaStreamDestroy(self.stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
