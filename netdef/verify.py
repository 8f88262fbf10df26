"""`--verify`: evaluate networks on the CPU on the 9 hackathon cases and compare with ONNX Runtime.

No machine here can execute a TensorRT engine, so what is checked is the network definition the
plan was built from, evaluated layer by layer by netdef.evaluator (FP16 tensors rounded as TensorRT
stores them), against ONNX Runtime on the original ONNX. The report is written to EDIR/verify.json:
{"cases": [{"network", "batch", "T", "output", "a", "r", "pass"}], "all_pass": bool}.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .engine import atomic_write_json
from .metrics import HACKATHON_CASES, THRESHOLDS, hackathon_metrics

JUDGED = ("encoder_out", "encoder_out_lens", "decoder_out", "best_index")


def case_arrays(cases, network: str, batch: int, frames: int, names) -> dict[str, np.ndarray]:
    prefix = f"{network}.b{batch}.t{frames}."
    missing = [n for n in names if prefix + n not in cases]
    if missing:
        raise KeyError(f"cases: no '{prefix}{missing[0]}' (the cases file lacks this network's tensors)")
    return {n: np.asarray(cases[prefix + n]) for n in names}


def cases_from_onnx(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Hackathon-style cases with ONNX Runtime references, for weights that came with no cases file.

    The ONNX files are the ones config.json says the weights were extracted from (hash-checked).
    """
    from tools.export_wenet import make_cases

    from .engine import sha256_file

    with tempfile.TemporaryDirectory(prefix="netdef-verify.") as tmp:
        for network in ("encoder", "decoder"):
            source = config.get("sources", {}).get(network)
            if not source or not Path(source["path"]).is_file():
                raise FileNotFoundError(f"--verify: config.json names no readable {network} ONNX to compute references from; pass the model's cases.npz with --cases")
            if sha256_file(source["path"]) != source["sha256"]:
                raise ValueError(f"--verify: {source['path']} changed since the weights were extracted (sha256 differs)")
            (Path(tmp) / f"{network}.onnx").symlink_to(Path(source["path"]).resolve())
        return make_cases(config, Path(tmp), seed)


def compare_network(network_name: str, network, cases, outputs, progress=True, shapes=HACKATHON_CASES) -> list[dict]:
    """Evaluate one network definition on the cases (batch, T) in `shapes`; metrics for each judged output."""
    from .evaluator import evaluate

    input_names = [network.get_input(i).name for i in range(network.num_inputs)]
    rows = []
    for batch, frames in shapes:
        start = time.perf_counter()
        got = evaluate(network, case_arrays(cases, network_name, batch, frames, input_names))
        for out in outputs:
            # judged outputs only, and only where the reference has them (WeNet's default decoder
            # export has no decoder_out, though the netdef decoder can still compute it)
            if out not in JUDGED or out not in got or f"{network_name}.b{batch}.t{frames}.{out}" not in cases:
                continue
            ref = case_arrays(cases, network_name, batch, frames, [out])[out]
            rows.append({"network": network_name, "batch": batch, "T": frames, "output": out, **hackathon_metrics(out, got[out], ref)})
        if progress:
            print(f"[verify] {network_name} b{batch} t{frames}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return rows


def verify_definitions(definitions: dict, cases, progress=True) -> dict:
    """definitions: name -> object with .network and .outputs (netdef.build.NetworkDefinition)."""
    rows = []
    for name, d in definitions.items():
        rows += compare_network(name, d.network, cases, d.outputs, progress)
    return {"cases": rows, "all_pass": bool(rows) and all(r["pass"] for r in rows)}


def verify_build(manifest_path: Path, *, definitions: dict | None = None, config: dict | None = None, cases_path=None) -> dict:
    """Verify the networks a manifest was built from and write verify.json beside it.

    definitions: the netdef networks that were built (netdef.build.NetworkDefinition by name); for a
    parser build, None: the ONNX files the manifest names are parsed again with the same conversion.
    Cases: cases_path, else made with ONNX Runtime on the ONNX files config.json names."""
    manifest = json.loads(Path(manifest_path).read_text())
    if definitions is None:
        if manifest["kind"] != "parser":
            raise ValueError(f"{manifest_path}: a {manifest['kind']} build is verified from its network definitions")
        from .parser_baseline import parse_onnx

        definitions = {}
        fp32_ops = tuple(manifest.get("parser", {}).get("fp16_extra_fp32_ops", ()))  # the conversion the plan was built with
        for name, entry in manifest["sources"].items():
            builder, net, parser = parse_onnx(Path(entry["path"]), manifest["precision"] == "fp16", fp32_ops=fp32_ops)
            outs = tuple(net.get_output(i).name for i in range(net.num_outputs))
            definitions[name.removesuffix(".onnx")] = _Parsed(net, outs, (builder, parser))
    if cases_path is not None:
        cases = np.load(cases_path)
    elif config is not None:
        cases = cases_from_onnx(config)
    else:
        raise FileNotFoundError(f"--verify: no cases for {manifest_path}; pass the model's cases.npz with --cases")
    report = verify_definitions(definitions, cases)
    report["kind"], report["precision"] = manifest["kind"], manifest["precision"]
    atomic_write_json(Path(manifest_path).parent / "verify.json", report)
    return report


class _Parsed:
    def __init__(self, network, outputs, keepalive):
        self.network, self.outputs, self._keepalive = network, outputs, keepalive


def print_table(report: dict, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"{'network':8} {'case':>9} {'output':17} {'a (max abs)':>12} {'r (median rel)':>15}  result", file=stream)
    for r in report["cases"]:
        eps, max_a, max_r = THRESHOLDS[r["output"]]
        limits = " ".join(x for x in (f"a<{max_a:g}" if max_a else "", f"r<{max_r:g}" if max_r else "") if x)
        print(f"{r['network']:8} {'b%d t%d' % (r['batch'], r['T']):>9} {r['output']:17} {r['a']:12.3e} {r['r']:15.3e}  "
              f"{'pass' if r['pass'] else 'FAIL'} ({limits})", file=stream)
    print(f"all pass: {report['all_pass']}", file=stream)
