"""`python tools/compare.py`: netdef engines against ONNX-parser engines, FP32 and FP16, on one model.

    python tools/compare.py                      # the built-in aishell-sized model
    python tools/compare.py --model tiny --out out/compare-tiny

For each of netdef/parser x fp32/fp16 it builds the encoder and decoder engines with the same profiles,
then reports per engine: layer count, build time, plan size, accuracy on the 9 hackathon cases (a, r and
pass per compared output, from the CPU evaluator on the network definition against ONNX Runtime's
outputs stored in the model's cases.npz), and latency / throughput per case where a GPU TensorRT runtime
exists (10 warm-up and 30 timed runs with CUDA events, plain and with CUDA-graph replay).

Writes OUT/report.json, OUT/report.png and OUT/report.md (a table for docs/), prints the table, and
keeps the engines under OUT/engines/{kind}-{precision}/. An engine outside the hackathon thresholds is
a finding, reported and marked in the table, not an error; errors exit 2 and write no report.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netdef.backend import describe  # noqa: E402
from netdef.backend import np_dtype  # noqa: E402
from netdef.engine import atomic_write_bytes, atomic_write_json  # noqa: E402
from netdef.metrics import HACKATHON_CASES, THRESHOLDS, hackathon_metrics  # noqa: E402
from netdef.profiles import ProfileSpec  # noqa: E402

KINDS = ("netdef", "parser")
PRECISIONS = ("fp32", "fp16")
NETWORKS = ("encoder", "decoder")
# The outputs the hackathon compared, per network.
COMPARED = {"encoder": ("encoder_out", "encoder_out_lens"), "decoder": ("decoder_out", "best_index")}
NO_RUNTIME = "not measured: no TensorRT runtime on this machine"
WARMUP, TIMED = 10, 30


@dataclass
class Engine:
    """One built engine and the network definition it was built from (kept alive for the evaluator)."""

    kind: str
    network_name: str
    precision: str
    engine_dir: Path
    manifest_entry: dict
    network: object
    keepalive: object


def case_key(batch: int, seq: int) -> str:
    return f"b{batch}.t{seq}"


def case_tensors(cases, network: str, batch: int, seq: int) -> dict[str, np.ndarray]:
    prefix = f"{network}.{case_key(batch, seq)}."
    found = {k[len(prefix):]: cases[k] for k in cases.files if k.startswith(prefix)}
    if not found:
        raise KeyError(f"cases.npz has no tensors '{prefix}*'")
    return found


def network_io(network) -> tuple[dict[str, np.dtype], list[str]]:
    inputs = {network.get_input(i).name: np_dtype(network.get_input(i).dtype) for i in range(network.num_inputs)}
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    return inputs, outputs


def accuracy(engine: Engine, cases, evaluate) -> list[dict]:
    """a, r and pass for each hackathon case and compared output the network has."""
    input_dtypes, outputs = network_io(engine.network)
    rows = []
    for batch, seq in HACKATHON_CASES:
        tensors = case_tensors(cases, engine.network_name, batch, seq)
        missing = sorted(set(input_dtypes) - set(tensors))
        if missing:
            raise KeyError(f"cases.npz lacks {engine.network_name} inputs {missing} for case {case_key(batch, seq)}")
        # The interface's int64/int32 at the edge, as the runner converts them for an engine.
        feeds = {name: tensors[name].astype(dtype, copy=False) for name, dtype in input_dtypes.items()}
        got = evaluate(engine.network, feeds)
        for output in COMPARED[engine.network_name]:
            if output not in outputs:
                continue
            m = hackathon_metrics(output, got[output], tensors[output])
            rows.append({"case": case_key(batch, seq), "batch": batch, "seq": seq, "output": output, **m})
    return rows


def latency(engine: Engine, cases) -> list[dict]:
    """Per case: mean ms over 30 runs after 10 warm-ups, plain and with CUDA-graph replay."""
    from netdef.runtime import EngineRunner

    rows = []
    with EngineRunner(engine.engine_dir, engine.network_name) as runner:
        for batch, seq in HACKATHON_CASES:
            tensors = case_tensors(cases, engine.network_name, batch, seq)
            inputs = {name: tensors[name] for name in runner.spec.inputs}
            row = {"case": case_key(batch, seq), "batch": batch, "seq": seq}
            for label, graph in (("", False), ("graph_", True)):
                ms = runner.time(inputs, warmup=WARMUP, runs=TIMED, cuda_graph=graph)
                row[f"{label}latency_ms"] = ms
                row[f"{label}throughput"] = batch * seq / (ms / 1e3)  # hackathon: batch * sequence / latency
            rows.append(row)
    return rows


def build(kind: str, precision: str, model, engine_dir: Path, profile: ProfileSpec, quiet: bool,
          parser_fp32_ops: tuple[str, ...] = ()) -> list[Engine]:
    """Build both engines of one kind and precision; return them with their network definitions."""
    import json

    fp16 = precision == "fp16"
    if kind == "parser":
        from netdef.parser_baseline import build_parser_engines, parse_onnx

        manifest_path = build_parser_engines(model.dir, engine_dir, fp16=fp16, profile=profile, quiet=quiet, fp32_ops=parser_fp32_ops)
        definitions = {n: parse_onnx(getattr(model, f"{n}_onnx"), fp16, fp32_ops=parser_fp32_ops) for n in NETWORKS}
        networks = {n: (d[1], d) for n, d in definitions.items()}
    else:
        from netdef.build import build_networks, write_engines
        from weights.loader import load_weights

        weights = load_weights(model.weights_dir)
        definitions = build_networks(weights, fp16, profile=profile)
        manifest_path = write_engines(definitions, weights, engine_dir, quiet=quiet)  # the networks evaluated are the ones built
        networks = {n: (d.network, d) for n, d in definitions.items()}
    manifest = json.loads(Path(manifest_path).read_text())
    for n, (network, _) in networks.items():
        # A parser network is parsed again after the build; it must be the one that was built.
        if network.num_layers != manifest["engines"][n]["layers"]:
            raise ValueError(f"{kind} {precision} {n}: defined again with {network.num_layers} layers, built with {manifest['engines'][n]['layers']}")
    return [
        Engine(kind, n, precision, engine_dir, manifest["engines"][n], network, keepalive)
        for n, (network, keepalive) in networks.items()
    ]


def entry_of(engine: Engine, acc: list[dict], lat: list[dict] | None) -> dict:
    m = engine.manifest_entry
    return {
        "kind": engine.kind,
        "network": engine.network_name,
        "precision": engine.precision,
        "layers": m["layers"],
        "build_s": m["build_s"],
        "plan_bytes": m["plan_bytes"],
        "accuracy": acc,
        "latency_ms": lat,
    }


# ------------------------------------------------------------------------------------------------ report


def summary(entry: dict) -> dict[str, dict]:
    """Per compared output: worst a and r over the cases, and how many cases pass."""
    out = {}
    for row in entry["accuracy"]:
        s = out.setdefault(row["output"], {"a": 0.0, "r": 0.0, "passed": 0, "cases": 0})
        s["a"], s["r"] = max(s["a"], row["a"]), max(s["r"], row["r"])
        s["passed"] += row["pass"]
        s["cases"] += 1
    return out


def latency_text(entry: dict, note: str) -> str:
    lat = entry["latency_ms"]
    if lat is None:
        return note
    mean = lambda key: float(np.mean([row[key] for row in lat]))
    return f"{mean('latency_ms'):.3f} ms ({mean('graph_latency_ms'):.3f} ms graph), mean of {len(lat)} cases"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["kind", "network", "precision", "layers", "build s", "plan MB", "output", "max a", "max r", "pass", "latency"]
    rows = []
    for entry in report["engines"]:
        for i, (output, s) in enumerate(summary(entry).items()):
            first = i == 0
            rows.append([
                entry["kind"] if first else "", entry["network"] if first else "", entry["precision"] if first else "",
                str(entry["layers"]) if first else "", f"{entry['build_s']:.1f}" if first else "",
                f"{entry['plan_bytes'] / 2**20:.1f}" if first else "",
                output, f"{s['a']:.3g}", f"{s['r']:.3g}", f"{s['passed']}/{s['cases']}",
                latency_text(entry, report["latency_note"]) if first else "",
            ])
    return header, rows


def format_table(report: dict) -> str:
    header, rows = table_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_markdown(report: dict) -> str:
    header, rows = table_rows(report)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(rows_i) + " |" for rows_i in rows]
    out += ["", "Per case (a / r, * = fails the hackathon threshold):", ""]
    cases = [case_key(b, t) for b, t in HACKATHON_CASES]
    out += ["| engine | output | " + " | ".join(cases) + " |", "|" + "---|" * (len(cases) + 2)]
    for entry in report["engines"]:
        by_output: dict[str, dict[str, dict]] = {}
        for row in entry["accuracy"]:
            by_output.setdefault(row["output"], {})[row["case"]] = row
        for output, per_case in by_output.items():
            cells = [f"{per_case[c]['a']:.2g} / {per_case[c]['r']:.3g}{'' if per_case[c]['pass'] else ' *'}" for c in cases]
            out.append(f"| {entry['kind']} {entry['network']} {entry['precision']} | {output} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def threshold_share(row: dict) -> float:
    """How close a result is to failing: the larger of a / max_a and r / max_r (1 = the threshold)."""
    _, max_a, max_r = THRESHOLDS[row["output"]]
    shares = [row["a"] / max_a] if max_a else []
    shares += [row["r"] / max_r] if max_r else []
    return max(shares)


def plot(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = report["engines"]
    labels = [f"{k} {p}" for k in KINDS for p in PRECISIONS]
    colors = {"netdef fp32": "#1f5fa8", "netdef fp16": "#7fb3e8", "parser fp32": "#c0501f", "parser fp16": "#f0a27a"}
    find = lambda network, label: next((e for e in engines if e["network"] == network and f"{e['kind']} {e['precision']}" == label), None)

    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle(f"netdef vs ONNX-parser engines: {report['model']} model, {report['backend']}", fontsize=14, weight="bold")
    width = 0.8 / len(labels)

    def grouped(ax, groups, value, title, ylabel, fmt, log=False, fails=lambda v: False):
        for j, label in enumerate(labels):
            xs, ys = [], []
            for i, group in enumerate(groups):
                v = value(group, label)
                if v is not None:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(v)
            bars = ax.bar(xs, ys, width, color=colors[label], label=label, edgecolor="black", linewidth=0.4)
            for bar, y in zip(bars, ys):
                if fails(y):  # a failing result is hatched and outlined in red, not only taller
                    bar.set(hatch="xx", edgecolor="red", linewidth=1.2)
            ax.bar_label(bars, labels=[fmt(y) for y in ys], fontsize=7, padding=1, rotation=90 if len(groups) > 2 else 0)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(title, weight="bold")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.2)

    def field(name, scale=1.0):
        return lambda network, label: (e[name] / scale) if (e := find(network, label)) else None

    grouped(axes[0, 0], NETWORKS, field("layers"), "Layers in the network (fewer is leaner)", "layers", lambda v: f"{v:.0f}")
    grouped(axes[0, 1], NETWORKS, field("build_s"), "Build time (TensorRT builder)", "seconds", lambda v: f"{v:.1f}")
    grouped(axes[0, 2], NETWORKS, field("plan_bytes", 2**20), "Plan size", "MiB", lambda v: f"{v:.1f}")

    floor = 1e-6  # a log axis has no 0: exact results are drawn at the floor and labelled "0"
    for ax, network in ((axes[1, 0], "encoder"), (axes[1, 1], "decoder")):
        outputs = [o for o in COMPARED[network] if any(r["output"] == o for e in engines if e["network"] == network for r in e["accuracy"])]

        def worst(output, label, network=network):
            e = find(network, label)
            rows = [r for r in e["accuracy"] if r["output"] == output] if e else []
            return max(floor, max(threshold_share(r) for r in rows)) if rows else None

        grouped(ax, outputs, worst, f"{network.capitalize()} accuracy vs ONNX Runtime, worst of {len(HACKATHON_CASES)} cases",
                "share of the hackathon limit (log; 1 and above fails)",
                lambda v: (f"{v:.3g}" + (" FAIL" if v >= 1 else "")) if v > floor else "0", log=True, fails=lambda v: v >= 1)
        ax.axhline(1.0, color="red", linestyle="--", linewidth=1.2)

    ax = axes[1, 2]
    if any(e["latency_ms"] for e in engines):
        def mean_latency(network, label):
            e = find(network, label)
            return float(np.mean([r["graph_latency_ms"] for r in e["latency_ms"]])) if e and e["latency_ms"] else None

        grouped(ax, NETWORKS, mean_latency, "Latency, mean over cases (CUDA graph)", "ms", lambda v: f"{v:.2f}")
    else:
        ax.set_axis_off()
        ax.set_title("Latency", weight="bold")
        ax.text(0.5, 0.5, report["latency_note"].replace(": ", ":\n", 1), ha="center", va="center", fontsize=12, wrap=True,
                transform=ax.transAxes, bbox={"boxstyle": "round", "facecolor": "#eeeeee", "edgecolor": "#999999"})
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=4, fontsize=10, bbox_to_anchor=(0.99, 0.955))
    fig.text(0.01, 0.01, "Accuracy: the CPU evaluator on each network vs ONNX Runtime on the FP32 ONNX, hackathon 2022 metrics: "
             "a = max|diff|, r = median(|diff| / (|ref| + eps)); each bar is max(a / a limit, r / r limit) over the cases.",
             fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.025, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ main


def user_model(onnx_dir: Path, weights_dir: Path, cases: Path | None):
    """ModelPaths for a user's model: DIR/encoder.onnx + decoder.onnx and their extracted weights.

    Cases: --cases FILE, else DIR/cases.npz, else hackathon-style cases made with ONNX Runtime
    references on those ONNX files (saved as cases.npz in the report folder, never in DIR)."""
    from weights.default_model import ModelPaths

    for f in ("encoder.onnx", "decoder.onnx"):
        if not (onnx_dir / f).is_file():
            raise FileNotFoundError(f"--onnx {onnx_dir}: no {f} there")
    if not (weights_dir / "config.json").is_file():
        raise FileNotFoundError(f"--weights {weights_dir}: no config.json (run tools/extract_weights.py first)")
    cases = cases or (onnx_dir / "cases.npz" if (onnx_dir / "cases.npz").is_file() else None)
    return ModelPaths(onnx_dir, onnx_dir / "encoder.onnx", onnx_dir / "decoder.onnx", cases, weights_dir, onnx_dir.resolve().name, -1)


def load_cases(model, out: Path, log=print):
    if model.cases is not None:
        return np.load(model.cases)
    from tools.export_wenet import make_cases

    log(f"[compare] no cases file: making the 9 hackathon cases with ONNX Runtime on {model.dir}")
    config = json.loads((Path(model.weights_dir) / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "cases.npz", **make_cases(config, Path(model.dir), seed=0))
    return np.load(out / "cases.npz")


def compare(model_name: str, out: Path, *, kinds=KINDS, precisions=PRECISIONS, profile: ProfileSpec | None = None,
            quiet: bool = False, parser_fp32_ops: tuple[str, ...] = (), log=print, model=None) -> dict:
    """The report for the built-in model `model_name`, or for `model` (a ModelPaths) when given."""
    from netdef.evaluator import evaluate
    from netdef.runtime import gpu_runtime_status
    from weights.default_model import ensure_model

    profile = profile or ProfileSpec()
    model = model or ensure_model(model_name)
    cases = load_cases(model, out, log)
    usable, why = gpu_runtime_status()
    note = "measured with CUDA events" if usable else NO_RUNTIME
    entries = []
    for kind in kinds:
        for precision in precisions:
            log(f"[compare] building {kind} {precision} engines")
            for engine in build(kind, precision, model, out / "engines" / f"{kind}-{precision}", profile, quiet, parser_fp32_ops):
                start = time.perf_counter()
                acc = accuracy(engine, cases, evaluate)
                log(f"[compare] {kind} {precision} {engine.network_name}: evaluated {len(HACKATHON_CASES)} cases on the CPU "
                    f"in {time.perf_counter() - start:.1f} s")
                lat = latency(engine, cases) if usable else None
                entries.append(entry_of(engine, acc, lat))
    return {
        "model": model_name,
        "backend": describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": [list(c) for c in HACKATHON_CASES],
        "thresholds": {k: {"eps": v[0], "max_a": v[1], "max_r": v[2]} for k, v in THRESHOLDS.items()},
        "accuracy_reference": "ONNX Runtime outputs of the exported FP32 ONNX (cases.npz); CPU evaluator on each network definition",
        "parser_fp16_extra_fp32_ops": list(parser_fp32_ops),
        "latency_note": note,
        "latency_runtime": why,
        "engines": entries,
    }


def write_report(report: dict, out: Path) -> dict[str, Path]:
    paths = {"json": out / "report.json", "png": out / "report.png", "md": out / "report.md"}
    png = plot(report)  # render before writing anything, so a failure leaves no partial report
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["png"], png)
    atomic_write_bytes(paths["md"], format_markdown(report).encode())
    return paths


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="aishell", choices=("aishell", "tiny"), help="built-in model (default aishell)")
    p.add_argument("--onnx", type=Path, help="your model instead: folder with encoder.onnx and decoder.onnx (needs --weights)")
    p.add_argument("--weights", type=Path, help="with --onnx: the weights folder tools/extract_weights.py wrote from them")
    p.add_argument("--cases", type=Path, help="with --onnx: cases.npz (default: DIR/cases.npz, else made with ONNX Runtime)")
    p.add_argument("--out", type=Path, help="output folder (default out/compare-MODEL)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma list of netdef, parser")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list of fp32, fp16")
    p.add_argument("--parser-fp32-ops", default="", help="comma list of ONNX op types the parser's FP16 conversion "
                   "keeps FP32 beyond the tool's block list (e.g. ReduceMean,Pow,LogSoftmax)")
    p.add_argument("--quiet", action="store_true", help="no builder progress output")
    args = p.parse_args(argv)
    for flag, allowed in (("kinds", KINDS), ("precisions", PRECISIONS)):
        chosen = tuple(v.strip() for v in getattr(args, flag).split(",") if v.strip())
        bad = [v for v in chosen if v not in allowed]
        if bad or not chosen:
            p.error(f"--{flag}: expected a comma list of {', '.join(allowed)}, got {getattr(args, flag)!r}")
        setattr(args, flag, chosen)
    args.parser_fp32_ops = tuple(o.strip() for o in args.parser_fp32_ops.split(",") if o.strip())
    if (args.onnx is None) != (args.weights is None):
        p.error("--onnx and --weights go together: the ONNX files and the weights extracted from them")
    if args.onnx is not None:
        args.model = args.onnx.resolve().name
    args.out = args.out or Path("out") / f"compare-{args.model}"
    return args


def main(argv=None) -> int:
    from netdef.engine import BuildError
    from netdef.parser_baseline import ParseError

    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    log(f"[compare] TensorRT backend: {describe()}")
    try:
        model = user_model(args.onnx, args.weights, args.cases) if args.onnx is not None else None
        report = compare(args.model, args.out, kinds=args.kinds, precisions=args.precisions, quiet=args.quiet,
                         parser_fp32_ops=args.parser_fp32_ops, log=log, model=model)
    except (BuildError, ParseError, FileNotFoundError, KeyError, ValueError) as exc:
        log(f"compare: error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}")
        return 2
    paths = write_report(report, args.out)
    print(format_table(report))
    log(f"[compare] wrote {paths['json']}, {paths['png']}, {paths['md']}")
    failed = [f"{e['kind']} {e['network']} {e['precision']}" for e in report["engines"] if not all(r["pass"] for r in e["accuracy"])]
    if failed:
        log(f"[compare] outside the hackathon thresholds: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
