"""Check and time the plugin kernels on a GPU (run it on the H100 through the device tool).

For every shape: fresh random inputs, outputs poisoned with NaN before each launch, the result compared
with the float64 NumPy references of plugins/reference.py by ||out - ref|| / ||ref|| (limits: 1e-5 FP32,
1e-3 FP16), then timed against PyTorch and the floors:

  layernorm   plugin (x + residual -> sum, LN(sum))  vs  torch `s = x + r; F.layer_norm(s)`;
              floor = bytes moved (inputs read once, outputs written once) / measured copy bandwidth
  attention   plugin (one kernel)  vs  (a) SDPA with the rel-pos term as an additive float mask, the mask
              built by a matmul + masked_fill, (b) SDPA alone given that mask, (c) the unfused math;
              floor = max(bytes / bandwidth, FMAs / peak FMA rate of the unit the launched kernel uses)

Shapes: batch {1,4,16} x T' {16,64,256} and 64 x 1024 (rows of 256 for LayerNorm; 4 heads x 64 for
attention), plus odd sizes and lengths below T' for the correctness pass. Times are medians of CUDA
graph replays (many launches per graph, so launch overhead is not timed). Prints a table, writes JSON.

    python tools/bench_kernels.py --json out.json [--check-plugins]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from netdef.files import atomic_write_json  # noqa: E402
from plugins import launch, reference  # noqa: E402

GRID_SHAPES = [(b, t) for b in (1, 4, 16) for t in (16, 64, 256)] + [(64, 1024)]
ODD_SHAPES = [(3, 37), (2, 129), (5, 1)]  # correctness only
MODEL_DIM, HEADS, HEAD_DIM = 256, 4, 64
LIMITS = {"float32": 1e-5, "float16": 1e-3}
DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Datasheet rates of the H100 SXM for the units the attention kernels use: FP32 runs as three TF32
# tensor-core products per FMA (dense TF32 494.7 TFLOP/s), FP16 on the tensor cores with FP32
# accumulation (989.4 TFLOP/s). For reference, the CUDA cores do 132 SMs x 128 lanes x 1.98 GHz FP32 FMAs.
PEAK_FMA_PER_S = {"float32": 494.7e12 / 2 / 3, "float16": 989.4e12 / 2}
CUDA_CORE_FMA_PER_S = 132 * 128 * 1.98e9
EPS = 1e-5
REF_BATCHES_MAX = 4  # float64 references for at most this many sequences of a batch (each is independent)


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    out = np.asarray(out, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        return math.inf  # NaN poison left behind, or an overflow
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0))


def stream_handle() -> int:
    return torch.cuda.current_stream().cuda_stream


def graph_time_us(fn, launches_per_graph: int = 20, replays: int = 15) -> float:
    """Median time of one `fn()` from CUDA-graph replays, in microseconds."""
    fn()  # module load / compile outside the capture
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches_per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / launches_per_graph)
    return float(np.median(times))


def measure_copy_bandwidth() -> float:
    """Best bytes (read + written) per second of plain device copies and an elementwise add, 256 MiB+."""
    best = 0.0
    for numel in (1 << 26, 1 << 28):
        a = torch.empty(numel, dtype=torch.float32, device="cuda").uniform_()
        b, c = torch.empty_like(a).uniform_(), torch.empty_like(a)
        copy_us = graph_time_us(lambda: c.copy_(a), launches_per_graph=5, replays=10)
        add_us = graph_time_us(lambda: torch.add(a, b, out=c), launches_per_graph=5, replays=10)
        best = max(best, 2 * numel * 4 / (copy_us * 1e-6), 3 * numel * 4 / (add_us * 1e-6))
        del a, b, c
    return best


def random(shape, dtype, scale=1.0, offset=0.0):
    return (torch.randn(shape, device="cuda", dtype=torch.float32) * scale + offset).to(dtype)


def host64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


# ---------------------------------------------------------------------------------------------- LayerNorm
def ln_inputs(rows, dim, dtype):
    # A non-zero mean and a large scale: catches a variance computed as E[x^2] - E[x]^2.
    x = random((rows, dim), dtype, scale=3.0, offset=5.0)
    residual = random((rows, dim), dtype)
    gamma = random((dim,), dtype, scale=0.5, offset=1.0)
    beta = random((dim,), dtype, scale=0.5)
    return x, residual, gamma, beta


def ln_plugin(x, residual, gamma, beta, out_sum, out_norm, eps):
    rows, dim = x.shape
    launch.layernorm(
        x.data_ptr(), residual.data_ptr() if residual is not None else 0, gamma.data_ptr(), beta.data_ptr(),
        out_sum.data_ptr() if out_sum is not None else 0, out_norm.data_ptr(),
        rows=rows, dim=dim, eps=eps, dtype=np.dtype(str(x.dtype).removeprefix("torch.")), stream=stream_handle(),
    )


def check_layernorm(rows, dim, dtype_name, residual: bool, eps=EPS) -> dict:
    dtype = DTYPES[dtype_name]
    x, res, gamma, beta = ln_inputs(rows, dim, dtype)
    out_sum = torch.full_like(x, float("nan")) if residual else None
    out_norm = torch.full_like(x, float("nan"))
    ln_plugin(x, res if residual else None, gamma, beta, out_sum, out_norm, eps)
    torch.cuda.synchronize()
    if residual:
        ref_sum, ref_norm = reference.layernorm_residual_ref(host64(x), host64(res), host64(gamma), host64(beta), eps)
        errors = {"sum": rel_err(host64(out_sum), ref_sum), "norm": rel_err(host64(out_norm), ref_norm)}
    else:
        errors = {"norm": rel_err(host64(out_norm), reference.layernorm_ref(host64(x), host64(gamma), host64(beta), eps))}
    worst = max(errors.values())
    return {"kernel": "layernorm_residual" if residual else "layernorm", "dtype": dtype_name, "rows": rows, "dim": dim,
            "rel_err": errors, "ok": worst <= LIMITS[dtype_name]}


def time_layernorm(batch, seq, dtype_name, bandwidth) -> dict:
    dtype = DTYPES[dtype_name]
    rows, dim = batch * seq, MODEL_DIM
    x, res, gamma, beta = ln_inputs(rows, dim, dtype)
    out_sum, out_norm = torch.empty_like(x), torch.empty_like(x)
    plugin_us = graph_time_us(lambda: ln_plugin(x, res, gamma, beta, out_sum, out_norm, EPS))

    def torch_ln():
        s = x + res
        return s, F.layer_norm(s, (dim,), gamma, beta, EPS)

    torch_us = graph_time_us(torch_ln)
    nbytes = (4 * rows * dim + 2 * dim) * x.element_size()
    floor_us = nbytes / bandwidth * 1e6
    return {"kernel": "layernorm_residual", "dtype": dtype_name, "batch": batch, "seq": seq, "plugin_us": plugin_us,
            "torch_add_layer_norm_us": torch_us, "floor_us": floor_us}


# ---------------------------------------------------------------------------------------------- attention
def attn_inputs(batch, seq, dtype, lengths=None):
    hd = HEADS * HEAD_DIM
    q, k, v = (random((batch * seq, hd), dtype) for _ in range(3))
    p = random((HEADS, seq, HEAD_DIM), dtype)
    u = random((HEADS, HEAD_DIM), dtype, scale=0.5)
    w = random((HEADS, HEAD_DIM), dtype, scale=0.5)
    if lengths is None:
        lengths = torch.randint(max(1, seq // 2), seq + 1, (batch,), dtype=torch.int32)
        lengths[0] = seq  # one full-length sequence, the others mostly shorter
    return q, k, v, p, u, w, torch.as_tensor(lengths, dtype=torch.int32).cuda()


def attn_plugin(q, k, v, p, u, w, lengths, out, rows_per_thread=None, fp32_kernel=None):
    batch = lengths.shape[0]
    launch.relpos_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), p.data_ptr(), u.data_ptr(), w.data_ptr(), lengths.data_ptr(),
        out.data_ptr(), batch=batch, seq_len=q.shape[0] // batch, heads=HEADS, head_dim=HEAD_DIM,
        dtype=np.dtype(str(q.dtype).removeprefix("torch.")), stream=stream_handle(), rows_per_thread=rows_per_thread,
        fp32_kernel=fp32_kernel,
    )


def check_attention(batch, seq, dtype_name, lengths=None, rows_per_thread=None, fp32_kernel=None) -> dict:
    dtype = DTYPES[dtype_name]
    q, k, v, p, u, w, lengths = attn_inputs(batch, seq, dtype, lengths)
    out = torch.full_like(q, float("nan"))
    attn_plugin(q, k, v, p, u, w, lengths, out, rows_per_thread, fp32_kernel)
    torch.cuda.synchronize()
    # Each sequence is independent: the float64 reference runs on a few of them for large batches.
    picks = sorted({0, batch - 1, *range(0, batch, max(1, batch // REF_BATCHES_MAX))})[:REF_BATCHES_MAX + 1]
    rows = lambda t: host64(t.view(batch, seq, -1)[picks])  # noqa: E731
    ref = reference.rel_pos_attention_ref(rows(q), rows(k), rows(v), host64(p), host64(u), host64(w),
                                          lengths.cpu().numpy()[picks], HEADS)
    err = rel_err(rows(out), ref)
    unwritten = int(torch.isnan(out).sum())  # every row, padded or not, must be written
    name = "relpos_attention" + (f" {fp32_kernel}" if fp32_kernel else "") + (f" R={rows_per_thread}" if rows_per_thread else "")
    return {"kernel": name, "dtype": dtype_name, "batch": batch, "seq": seq,
            "lengths": lengths.cpu().tolist() if batch <= 16 else "random", "checked_batches": picks,
            "rel_err": {"out": err}, "unwritten": unwritten, "ok": err <= LIMITS[dtype_name] and unwritten == 0}


def time_attention(batch, seq, dtype_name, bandwidth) -> dict:
    dtype = DTYPES[dtype_name]
    q, k, v, p, u, w, lengths = attn_inputs(batch, seq, dtype)
    out = torch.empty_like(q)
    plugin_us = graph_time_us(lambda: attn_plugin(q, k, v, p, u, w, lengths, out))
    fp32_us = {name: graph_time_us(lambda: attn_plugin(q, k, v, p, u, w, lengths, out, fp32_kernel=name))
               for name in launch.FP32_ATTENTION_KERNELS} if dtype_name == "float32" else None

    scale = 1.0 / math.sqrt(HEAD_DIM)
    heads4 = lambda t: t.view(batch, seq, HEADS, HEAD_DIM).transpose(1, 2)  # noqa: E731  [B,H,T,dk] view
    key_masked = (torch.arange(seq, device="cuda")[None, :] >= lengths[:, None])[:, None, None, :]
    qh, kh, vh = heads4(q), heads4(k), heads4(v)
    u4, w4 = u[None, :, None, :], w[None, :, None, :]

    def rel_bias():
        bias = torch.matmul(qh + w4, p.transpose(-1, -2)) * scale  # [B,H,T,T]
        return bias.masked_fill(key_masked, float("-inf"))

    def merge(o):
        return o.transpose(1, 2).reshape(batch * seq, HEADS * HEAD_DIM)

    def sdpa_total():
        return merge(F.scaled_dot_product_attention(qh + u4, kh, vh, attn_mask=rel_bias()))

    bias = rel_bias()
    qu = (qh + u4).contiguous()

    def sdpa_only():
        return F.scaled_dot_product_attention(qu, kh, vh, attn_mask=bias)

    def unfused():
        scores = (torch.matmul(qh + u4, kh.transpose(-1, -2)) + torch.matmul(qh + w4, p.transpose(-1, -2))) * scale
        probs = torch.softmax(scores.masked_fill(key_masked, float("-inf")), dim=-1)
        return merge(torch.matmul(probs, vh))

    sdpa_total_us = graph_time_us(sdpa_total)
    sdpa_only_us = graph_time_us(sdpa_only)
    unfused_us = graph_time_us(unfused)
    nbytes = (4 * batch * seq + seq) * HEADS * HEAD_DIM * q.element_size()
    fmas = batch * HEADS * seq * seq * 3 * HEAD_DIM  # all keys; the kernel skips keys past the length
    simt = dtype_name == "float32" and launch.fp32_attention_kernel(batch, seq, HEADS) == "simt"
    floor_us = max(nbytes / bandwidth, fmas / (CUDA_CORE_FMA_PER_S if simt else PEAK_FMA_PER_S[dtype_name])) * 1e6
    return {"kernel": "relpos_attention", "dtype": dtype_name, "batch": batch, "seq": seq,
            "lengths": lengths.cpu().tolist() if batch <= 16 else "random", "plugin_us": plugin_us,
            "fp32_kernel_us": fp32_us,
            "sdpa_with_bias_total_us": sdpa_total_us, "sdpa_given_bias_us": sdpa_only_us,
            "unfused_us": unfused_us, "floor_us": floor_us}


def sweep_rows_per_thread() -> list[dict]:
    """FP32 attention time for each block size R, to check the launcher's choice."""
    rows_out = []
    print(f"\nFP32 CUDA-core attention, us by rows per thread R (launcher: the largest R whose grid fills half the SMs)")
    for batch, seq in [(1, 256), (4, 256), (16, 256), (16, 64), (64, 1024)]:
        q, k, v, p, u, w, lengths = attn_inputs(batch, seq, torch.float32)
        out = torch.empty_like(q)
        times = {r: graph_time_us(lambda: attn_plugin(q, k, v, p, u, w, lengths, out, r, "simt")) for r in (1, 2, 4)}
        picked = launch.attention_rows_per_thread(batch, seq, HEADS, torch.cuda.get_device_properties(0).multi_processor_count)
        rows_out.append({"batch": batch, "seq": seq, "us_by_rows": times, "picked": picked})
        print(f"  {batch}x{seq}: " + "  ".join(f"R={r}: {t:.2f}" for r, t in times.items()) + f"   picked R={picked}")
    return rows_out


# ---------------------------------------------------------------------------------------------- plugins
def run_plugin_checks() -> list[dict]:
    """Each plugin's own enqueue, called with device pointers, against the kernel launched directly
    (must match bit for bit) and against the float64 reference."""
    from netdef.backend import describe, trt
    from plugins import names, trt_plugins

    print(f"\nplugin enqueue checks through {describe()}")
    trt_plugins.register_plugins()
    trt_types = {torch.float32: trt.DataType.FLOAT, torch.float16: trt.DataType.HALF, torch.int32: trt.DataType.INT32}

    def desc(t: torch.Tensor):
        d = trt.PluginTensorDesc()
        d.dims = trt.Dims(list(t.shape))
        d.type = trt_types[t.dtype]
        d.format = trt.TensorFormat.LINEAR
        return d

    def enqueue(plugin, ins, outs):
        plugin.on_shape_change([desc(t) for t in ins], [desc(t) for t in outs])
        plugin.enqueue([desc(t) for t in ins], [desc(t) for t in outs], [t.data_ptr() for t in ins],
                       [t.data_ptr() for t in outs], 0, stream_handle())
        torch.cuda.synchronize()

    results = []
    batch, seq = 4, 37
    for dtype_name, dtype in DTYPES.items():
        for residual in (True, False):
            x, res, gamma, beta = ln_inputs(batch * seq, MODEL_DIM, dtype)
            plugin = trt_plugins.create_plugin(names.LAYERNORM_PLUGIN_NAME, [
                trt.PluginField(names.LAYERNORM_FIELD_EPS, np.array([EPS], np.float32), trt.PluginFieldType.FLOAT32),
                trt.PluginField(names.LAYERNORM_FIELD_HAS_RESIDUAL, np.array([int(residual)], np.int32),
                                trt.PluginFieldType.INT32)])
            shape = (batch, seq, MODEL_DIM)
            ins = [t.view(shape) for t in ((x, res) if residual else (x,))] + [gamma, beta]
            outs = [torch.full(shape, float("nan"), dtype=dtype, device="cuda") for _ in range(plugin.num_outputs)]
            enqueue(plugin, ins, outs)
            direct = [torch.full_like(x, float("nan")) for _ in outs]
            ln_plugin(x, res if residual else None, gamma, beta, direct[0] if residual else None, direct[-1], EPS)
            torch.cuda.synchronize()
            same = all(torch.equal(a.view(-1), b.view(-1)) for a, b in zip(outs, direct))
            ref = reference.layernorm_residual_ref(host64(x), host64(res), host64(gamma), host64(beta), EPS) \
                if residual else (reference.layernorm_ref(host64(x), host64(gamma), host64(beta), EPS),)
            err = max(rel_err(host64(o).reshape(r.shape), r) for o, r in zip(outs, ref))
            results.append({"kernel": f"plugin {plugin.plugin_name}" + (" +res" if residual else ""), "dtype": dtype_name,
                            "batch": batch, "seq": seq, "rel_err": {"out": err}, "same_as_kernel": same,
                            "ok": same and err <= LIMITS[dtype_name]})

        for batch_a, seq_a in ((batch, seq), (16, 256)):  # FP32: the CUDA-core kernel, then 3xTF32
            q, k, v, p, u, w, lengths = attn_inputs(batch_a, seq_a, dtype)
            plugin = trt_plugins.create_plugin(names.ATTENTION_PLUGIN_NAME, [
                trt.PluginField(names.ATTENTION_FIELD_HEADS, np.array([HEADS], np.int32), trt.PluginFieldType.INT32)])
            shape = (batch_a, seq_a, HEADS * HEAD_DIM)
            out = torch.full(shape, float("nan"), dtype=dtype, device="cuda")
            enqueue(plugin, [q.view(shape), k.view(shape), v.view(shape), p, u, w, lengths], [out])
            direct = torch.full_like(q, float("nan"))
            attn_plugin(q, k, v, p, u, w, lengths, direct)
            torch.cuda.synchronize()
            same = torch.equal(out.view(-1), direct.view(-1))
            ref = reference.rel_pos_attention_ref(host64(q), host64(k), host64(v), host64(p), host64(u), host64(w),
                                                  lengths.cpu().numpy(), HEADS)
            err = rel_err(host64(out).reshape(ref.shape), ref)
            results.append({"kernel": f"plugin {plugin.plugin_name} {batch_a}x{seq_a}", "dtype": dtype_name,
                            "batch": batch_a, "seq": seq_a, "rel_err": {"out": err}, "same_as_kernel": same,
                            "ok": same and err <= LIMITS[dtype_name]})
    for r in results:
        print(f"{r['kernel']:<34}{r['dtype']:<9}{r['rel_err']['out']:>10.2e}  bitwise = kernel: {r['same_as_kernel']}"
              f"  {'yes' if r['ok'] else 'NO'}")
    return results


# ---------------------------------------------------------------------------------------------- main
def run_checks() -> list[dict]:
    results = []
    for dtype_name in DTYPES:
        for batch, seq in GRID_SHAPES + ODD_SHAPES:
            results.append(check_layernorm(batch * seq, MODEL_DIM, dtype_name, residual=True))
            results.append(check_attention(batch, seq, dtype_name))
        for dim in (32, 96, 512, 1024):  # other LayerNorm sizes, odd row count, with and without residual
            results.append(check_layernorm(37, dim, dtype_name, residual=True))
            results.append(check_layernorm(37, dim, dtype_name, residual=False))
        results.append(check_layernorm(4 * 64, MODEL_DIM, dtype_name, residual=False))
        # A sequence of length 0 (zeros), lengths of 1 and lengths just past a key tile.
        results.append(check_attention(4, 130, dtype_name, lengths=[0, 1, 65, 130]))
    for batch, seq in GRID_SHAPES + ODD_SHAPES:  # both FP32 kernels on every shape, whichever is picked
        other = "simt" if launch.fp32_attention_kernel(batch, seq, HEADS) == "tf32x3" else "tf32x3"
        results.append(check_attention(batch, seq, "float32", fp32_kernel=other))
    results.append(check_attention(4, 130, "float32", lengths=[0, 1, 65, 130], fp32_kernel="tf32x3"))
    for rows in (1, 2, 4):  # the CUDA-core FP32 kernel, every block size
        results.append(check_attention(3, 77, "float32", rows_per_thread=rows, fp32_kernel="simt"))
        results.append(check_attention(2, 300, "float32", lengths=[300, 131], rows_per_thread=rows, fp32_kernel="simt"))
        results.append(check_attention(4, 130, "float32", lengths=[0, 1, 65, 130], rows_per_thread=rows,
                                       fp32_kernel="simt"))
    return results


def print_checks(results):
    print(f"{'kernel':<20}{'dtype':<9}{'shape':<16}{'rel err':>12}  ok")
    for r in results:
        shape = f"{r['rows']}x{r['dim']}" if "rows" in r else f"B{r['batch']} T{r['seq']}"
        print(f"{r['kernel']:<20}{r['dtype']:<9}{shape:<16}{max(r['rel_err'].values()):>12.2e}  {'yes' if r['ok'] else 'NO'}")


def print_timings(rows):
    print(f"\n{'kernel':<20}{'dtype':<9}{'B x T':<10}{'plugin us':>10}{'torch us':>10}{'sdpa+bias':>10}"
          f"{'sdpa only':>10}{'unfused':>10}{'floor us':>10}{'plug/floor':>11}")
    for r in rows:
        torch_us = r.get("torch_add_layer_norm_us", float("nan"))
        print(f"{r['kernel']:<20}{r['dtype']:<9}{str(r['batch']) + 'x' + str(r['seq']):<10}{r['plugin_us']:>10.2f}"
              f"{torch_us:>10.2f}{r.get('sdpa_with_bias_total_us', float('nan')):>10.2f}"
              f"{r.get('sdpa_given_bias_us', float('nan')):>10.2f}{r.get('unfused_us', float('nan')):>10.2f}"
              f"{r['floor_us']:>10.2f}{r['plugin_us'] / r['floor_us']:>11.2f}"
              + ("   " + "  ".join(f"{n} {t:.2f}" for n, t in r["fp32_kernel_us"].items()) if r.get("fp32_kernel_us") else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write every check and timing here")
    parser.add_argument("--check-plugins", action="store_true",
                        help="also call each plugin's own enqueue (needs TensorRT importable) and compare")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, seed {args.seed}")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seed": args.seed}

    checks = run_checks()
    print_checks(checks)
    report["checks"] = checks
    if args.check_plugins:
        report["plugin_checks"] = run_plugin_checks()
        checks = checks + report["plugin_checks"]

    if not args.skip_timing:
        bandwidth = measure_copy_bandwidth()
        print(f"\ncopy bandwidth (read + write): {bandwidth / 1e12:.2f} TB/s")
        report["copy_bandwidth_bytes_per_s"] = bandwidth
        timings = []
        for dtype_name in DTYPES:
            for batch, seq in GRID_SHAPES:
                timings.append(time_layernorm(batch, seq, dtype_name, bandwidth))
            for batch, seq in GRID_SHAPES:
                timings.append(time_attention(batch, seq, dtype_name, bandwidth))
        report["timings"] = timings
        print_timings(timings)
        report["fp32_rows_per_thread_sweep"] = sweep_rows_per_thread()

    if args.json:
        atomic_write_json(args.json, report, indent=1)
    failed = [c for c in checks if not c["ok"]]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
