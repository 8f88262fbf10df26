"""Compiling the plugin kernels with NVRTC at first use, caching the cubins, and launching them.

Everything goes through cuda-python's driver and NVRTC bindings (`cuda.bindings`), so the same code
runs inside a TensorRT plugin's `enqueue` and in the standalone benchmark. A kernel is named by its C++
template instance (`wenet::layernorm_kernel<float,256,true>`); NVRTC compiles only the instances asked
for, and the cubin lands in a cache keyed by the source text, the instance, the options, the GPU
architecture and the NVRTC version, so a second process loads it without compiling.

The cache folder is `$WENET_TRT_KERNEL_CACHE`, else `~/.cache/wenet_trt/kernels`.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from netdef.files import atomic_write_bytes

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
NVRTC_OPTIONS = ("--std=c++17", "-default-device")


class KernelError(RuntimeError):
    """A CUDA or NVRTC call failed; the message names the call and the kernel."""


def _driver():
    from cuda.bindings import driver  # imported late: the CPU-only paths never need it

    return driver


def _nvrtc():
    from cuda.bindings import nvrtc

    return nvrtc


def check(result, what: str):
    """Unpack a cuda-python result tuple, raising KernelError with the call's name on failure."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        name = getattr(status, "name", str(status))
        raise KernelError(f"{what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cache_dir() -> Path:
    return Path(os.environ.get("WENET_TRT_KERNEL_CACHE", Path.home() / ".cache" / "wenet_trt" / "kernels"))


def read_source(file_name: str) -> str:
    """A kernel file with its local includes inlined (NVRTC gets one self-contained source)."""
    lines = []
    for line in (KERNEL_DIR / file_name).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('#include "'):
            lines.append(read_source(stripped.split('"')[1]))
        elif stripped != "#pragma once":
            lines.append(line)
    return "\n".join(lines) + "\n"


def cuda_include_dir() -> str:
    """The folder holding cuda_fp16.h: $CUDA_HOME/$CUDA_PATH, /usr/local/cuda, or the pip CUDA headers."""
    candidates = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates.append(Path("/usr/local/cuda/include"))
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        found = find_nvidia_header_directory("cudart")
        if found:
            candidates.append(Path(found))
    except Exception:  # an older cuda-pathfinder without header lookup
        pass
    for folder in candidates:
        if (folder / "cuda_fp16.h").exists():
            return str(folder)
    raise KernelError(
        "cuda_fp16.h not found for NVRTC; set CUDA_HOME to a CUDA toolkit (tried "
        + ", ".join(str(c) for c in candidates) + ")"
    )


def compile_cubin(file_name: str, name_expression: str, arch: str) -> tuple[bytes, str]:
    """(cubin, lowered kernel name) for one template instance, compiled by NVRTC or read from the cache."""
    nvrtc = _nvrtc()
    source = read_source(file_name)
    version = check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    options = (*NVRTC_OPTIONS, f"--gpu-architecture={arch}", f"--include-path={cuda_include_dir()}")
    key = hashlib.sha256(
        json.dumps([source, name_expression, options, list(version)]).encode()
    ).hexdigest()[:32]
    cubin_path = cache_dir() / f"{key}.cubin"
    name_path = cache_dir() / f"{key}.name"
    if cubin_path.exists() and name_path.exists():
        return cubin_path.read_bytes(), name_path.read_text()

    program = check(nvrtc.nvrtcCreateProgram(source.encode(), file_name.encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        check(nvrtc.nvrtcAddNameExpression(program, name_expression.encode()), "nvrtcAddNameExpression")
        status = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])[0]
        if int(status) != 0:
            size = check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
            log = b" " * size
            check(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
            raise KernelError(f"NVRTC could not compile {name_expression} from {file_name}:\n{log.decode(errors='replace')}")
        lowered = check(nvrtc.nvrtcGetLoweredName(program, name_expression.encode()), "nvrtcGetLoweredName")
        size = check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
        cubin = b" " * size
        check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    lowered = lowered.decode() if isinstance(lowered, bytes) else str(lowered)
    atomic_write_bytes(cubin_path, cubin)
    atomic_write_bytes(name_path, lowered.encode())
    return cubin, lowered


def ensure_context():
    """The current CUDA context; the device's primary context is made current when there is none."""
    driver = _driver()
    check(driver.cuInit(0), "cuInit")
    context = check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if context is None or int(context) == 0:
        device = check(driver.cuDeviceGet(0), "cuDeviceGet")
        context = check(driver.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
        check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    return context


def device_arch() -> str:
    driver = _driver()
    device = check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
    attr = driver.CUdevice_attribute
    major = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "cuDeviceGetAttribute")
    minor = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device), "cuDeviceGetAttribute")
    return f"sm_{major}{minor}"


def max_dynamic_shared_bytes() -> int:
    driver = _driver()
    device = check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
    attr = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    return check(driver.cuDeviceGetAttribute(attr, device), "cuDeviceGetAttribute")


_multiprocessors: dict[int, int] = {}


def multiprocessor_count() -> int:
    """Multiprocessors of the current context's device (cached per device)."""
    driver = _driver()
    device = check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
    key = int(device)
    if key not in _multiprocessors:
        attr = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
        _multiprocessors[key] = check(driver.cuDeviceGetAttribute(attr, device), "cuDeviceGetAttribute")
    return _multiprocessors[key]


@dataclass
class Kernel:
    """One loaded kernel: launch it with (value, ctypes type) pairs."""

    name_expression: str
    function: object
    module: object
    dynamic_smem: int = 0

    def launch(self, grid, block, stream, args, dynamic_smem: int | None = None) -> None:
        driver = _driver()
        values = tuple(value for value, _ in args)
        types = tuple(kind for _, kind in args)
        smem = self.dynamic_smem if dynamic_smem is None else dynamic_smem
        check(
            driver.cuLaunchKernel(self.function, *grid, *block, smem, int(stream), (values, types), 0),
            f"cuLaunchKernel({self.name_expression})",
        )


_loaded: dict[tuple[int, str, str], Kernel] = {}
_lock = threading.Lock()


def get_kernel(file_name: str, name_expression: str, dynamic_smem: int = 0) -> Kernel:
    """The kernel `name_expression` from `kernels/<file_name>`, loaded into the current context once."""
    context = ensure_context()
    key = (int(context), file_name, name_expression)
    with _lock:
        kernel = _loaded.get(key)
        if kernel is not None:
            return kernel
        driver = _driver()
        cubin, lowered = compile_cubin(file_name, name_expression, device_arch())
        module = check(driver.cuModuleLoadData(cubin), f"cuModuleLoadData({name_expression})")
        function = check(driver.cuModuleGetFunction(module, lowered.encode()), f"cuModuleGetFunction({name_expression})")
        if dynamic_smem > 48 * 1024:
            limit = max_dynamic_shared_bytes()
            if dynamic_smem > limit:
                raise KernelError(
                    f"{name_expression} needs {dynamic_smem} bytes of shared memory; this GPU allows {limit} per block"
                )
            attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            check(driver.cuFuncSetAttribute(function, attr, dynamic_smem), f"cuFuncSetAttribute({name_expression})")
        kernel = Kernel(name_expression, function, module, dynamic_smem)
        _loaded[key] = kernel
        return kernel


POINTER = ctypes.c_void_p
INT = ctypes.c_int
FLOAT = ctypes.c_float
