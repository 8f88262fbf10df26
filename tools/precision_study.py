"""Which FP32 islands an --fp16 build needs: evaluate policy variants against ONNX Runtime.

    python tools/precision_study.py [--model aishell] [--cases b4t256,b16t64] [--json OUT]

Each variant is the default FP16 policy with some islands removed or added; each is evaluated on the
CPU (netdef.evaluator, FP16 rounding as TensorRT stores FP16 tensors) on the chosen hackathon cases
and compared with ONNX Runtime's outputs with the hackathon's a/r metrics. Prints a table and writes
JSON. The figures behind netdef/precision.py are recorded in docs/precision.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdef.build import build_networks  # noqa: E402
from netdef.precision import FP16_ISLANDS, PrecisionPolicy  # noqa: E402
from netdef.verify import compare_network  # noqa: E402

LN = [("*.norm_*", "fp32"), ("*.norm[0-9]", "fp32"), ("*.after_norm", "fp32")]
RESIDUAL = [("encoder.encoders.*.*", "fp16"), ("encoder.encoders.*", "fp32"), ("decoder.decoders.*.*", "fp16"), ("decoder.decoders.*", "fp32")]
HEADS = [("encoder.global_cmvn", "fp32"), ("ctc.log_softmax", "fp32"), ("decoder.log_softmax", "fp32"), ("decoder.score", "fp32")]

VARIANTS: dict[str, list[tuple[str, str]]] = {
    "fp16 everywhere (heads only FP32)": HEADS,
    "+ LayerNorm FP32": LN + HEADS,
    "+ residual stream FP32": RESIDUAL + HEADS,
    "default: LayerNorm + residual FP32": FP16_ISLANDS,
    "default + softmax FP32": [("*.softmax", "fp32")] + FP16_ISLANDS,
    "default + attention FP32": [("*.self_attn", "fp32"), ("*.src_attn", "fp32")] + FP16_ISLANDS,
    "default + conv module FP32": [("*.conv_module", "fp32")] + FP16_ISLANDS,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aishell", choices=("aishell", "tiny"))
    ap.add_argument("--cases", default="b4t256,b16t64", help="comma list of bBtT cases (default b4t256,b16t64)")
    ap.add_argument("--json", type=Path, default=Path("out/precision_study.json"))
    args = ap.parse_args(argv)

    from weights.default_model import ensure_model
    from weights.loader import load_weights

    model = ensure_model(args.model)
    weights = load_weights(model.weights_dir)
    cases = np.load(model.cases)
    wanted = {tuple(int(x) for x in c.lstrip("b").split("t")) for c in args.cases.split(",")}

    results = []
    for name, rules in VARIANTS.items():
        definitions = build_networks(weights, True, policy=PrecisionPolicy("fp16", list(rules)))
        for net_name, d in definitions.items():
            for row in compare_network(net_name, d.network, cases, d.outputs, progress=False, shapes=sorted(wanted)):
                if row["output"] in ("encoder_out", "decoder_out"):
                    results.append({"variant": name, **row})
                    print(f"{name:38} {net_name:8} b{row['batch']:<2} t{row['T']:<4} {row['output']:12} "
                          f"a={row['a']:.3e} r={row['r']:.3e} {'pass' if row['pass'] else 'FAIL'}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
