"""The plugin kernels compile with nvcc for every target architecture (no GPU needed), without register
spills, and the Python launchers' copies of the kernels' launch constants match the CUDA source."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins import launch
from plugins.loader import KERNEL_DIR, read_source

NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
ARCHS = ("80", "86", "89", "90")
KERNEL_FILES = ("layernorm.cu", "relpos_attention.cu")


class Nvcc:
    """One nvcc run in the background, its output in a log file (a pipe could fill and stall it)."""

    def __init__(self, *args: str, cwd: Path):
        if not Path(NVCC).exists():
            raise FileNotFoundError(f"nvcc not found (looked on PATH and at {NVCC}); CI compiles the kernels with it")
        self.log_path = cwd / f"nvcc-{id(self)}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([NVCC, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        returncode = self.process.wait(timeout=timeout)
        return returncode, self.log_path.read_text()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every kernel file, every supported template instance, for sm_80/86/89/90 (compiled in parallel)."""
    out = tmp_path_factory.mktemp("cubins")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    jobs = {name: Nvcc("-fatbin", "-DWENET_INSTANTIATE_ALL", "-Xptxas", "-v", "-Werror", "all-warnings",
                       *gencode, str(KERNEL_DIR / name), "-o", str(out / f"{name}.fatbin"), cwd=out)
            for name in KERNEL_FILES}
    return {name: (*job.finish(), out / f"{name}.fatbin") for name, job in jobs.items()}


@pytest.mark.parametrize("name", KERNEL_FILES)
def test_kernels_compile_for_every_architecture_without_spills(compiled, name):
    returncode, log, fatbin = compiled[name]
    assert returncode == 0, log
    assert fatbin.stat().st_size > 0
    for arch in ARCHS:
        assert f"for 'sm_{arch}'" in log, f"no sm_{arch} code for {name}"
    spills = [line for line in log.splitlines() if re.search(r"[1-9]\d* bytes spill (stores|loads)", line)]
    assert not spills, "\n".join(spills)
    stack = [line for line in log.splitlines() if re.search(r"[1-9]\d* bytes stack frame", line)]
    assert not stack, "\n".join(stack)


# The instances WeNet's model launches, as NVRTC gets them: the inlined source plus these instantiations.
HOT_INSTANCES = {
    "layernorm.cu": [
        f"template __global__ void wenet::layernorm_kernel<{t}, 256, {r}>(const {t}*, const {t}*, const {t}*, "
        f"const {t}*, {t}*, {t}*, int, float);"
        for t in ("float", "__half") for r in ("true", "false")
    ],
    "relpos_attention.cu": [
        f"template __global__ void wenet::relpos_attention_kernel<float, 64, {r}>(const float*, const float*, "
        f"const float*, const float*, const float*, const float*, const int*, float*, int, int);"
        for r in (1, 2, 4)
    ] + [
        "template __global__ void wenet::relpos_attention_tf32x3_kernel<64>(const float*, const float*, "
        "const float*, const float*, const float*, const float*, const int*, float*, int, int);",
        "template __global__ void wenet::relpos_attention_mma_kernel<64>(const __half*, const __half*, "
        "const __half*, const __half*, const __half*, const __half*, const int*, __half*, int, int);"
    ],
}


def test_nvrtc_source_is_self_contained_and_compiles(tmp_path):
    """What the loader hands NVRTC (local includes inlined) compiles on its own, for the hot instances."""
    jobs = []
    for name in KERNEL_FILES:
        source = read_source(name)
        assert '#include "' not in source
        (tmp_path / name).write_text(source + "\n".join(HOT_INSTANCES[name]) + "\n")
        jobs.append(Nvcc("-cubin", "-arch=sm_90", name, "-o", f"{name}.cubin", cwd=tmp_path))
    for job in jobs:
        returncode, log = job.finish()
        assert returncode == 0, log


HOST_PROGRAM = r"""
#include "relpos_attention.cu"
#include "layernorm.cu"
#include <cstdio>
int main() {
    std::printf("rows_per_block %d\n", wenet::kLayerNormRowsPerBlock);
    std::printf("attn %d %d %d\n", wenet::kAttnBlockN, wenet::kAttnThreads, wenet::kAttnPad);
    std::printf("mma %d %d %d %d\n", wenet::kMmaWarps, wenet::kMmaBlockN, wenet::kMmaPad, wenet::kMmaStages);
    std::printf("tf32 %d %d %d %d\n", wenet::kTf32Warps, wenet::kTf32BlockN, wenet::kTf32Pad, wenet::kTf32Stages);
    for (int dk = 16; dk <= 128; dk += 16)
        for (int rows = 1; rows <= 4; rows *= 2)
            std::printf("smem %d %d %d %d %d\n", dk, rows, wenet::relpos_attention_smem_bytes(dk, rows),
                        wenet::relpos_attention_mma_smem_bytes(dk), wenet::relpos_attention_tf32x3_smem_bytes(dk));
    return 0;
}
"""


def test_launch_constants_mirror_the_cuda_source(tmp_path):
    (tmp_path / "constants.cu").write_text(HOST_PROGRAM)
    job = Nvcc("-arch=sm_80", f"-I{KERNEL_DIR}", "constants.cu", "-o", "constants", cwd=tmp_path)
    returncode, log = job.finish()
    assert returncode == 0, log
    printed = subprocess.run([str(tmp_path / "constants")], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in printed.splitlines()]
    assert lines[0] == ["rows_per_block", str(launch.LAYERNORM_ROWS_PER_BLOCK)]
    assert lines[1][1:] == [str(v) for v in (launch.ATTENTION_BLOCK_N, launch.ATTENTION_THREADS, launch.ATTENTION_PAD)]
    assert lines[2][1:] == [str(v) for v in (launch.ATTENTION_MMA_WARPS, launch.ATTENTION_MMA_BLOCK_N,
                                             launch.ATTENTION_MMA_PAD, launch.ATTENTION_MMA_STAGES)]
    assert lines[3][1:] == [str(v) for v in (launch.ATTENTION_TF32_WARPS, launch.ATTENTION_TF32_BLOCK_N,
                                             launch.ATTENTION_TF32_PAD, launch.ATTENTION_TF32_STAGES)]
    assert len(lines) == 4 + 8 * 3
    for _, dk, rows, simt, mma, tf32 in lines[4:]:
        assert int(simt) == launch.attention_smem_bytes(int(dk), int(rows))
        assert int(mma) == launch.attention_mma_smem_bytes(int(dk))
        assert int(tf32) == launch.attention_tf32x3_smem_bytes(int(dk))
    # WeNet's d_k = 64 fits the 99 KB per block of sm_86/sm_89 in every kernel.
    for smem in (launch.attention_smem_bytes(64), launch.attention_mma_smem_bytes(64), launch.attention_tf32x3_smem_bytes(64)):
        assert smem <= 99 * 1024
