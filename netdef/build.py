"""`python -m netdef.build`: build WeNet encoder/decoder engines from extracted weights, no ONNX parser.

    python -m netdef.build --fp16 --verify                 # built-in default model
    python -m netdef.build --weights WDIR --out EDIR --fp16
    python -m netdef.build --parser --onnx DIR --fp16     # the parser baseline, same profiles

Writes EDIR/encoder.plan, EDIR/decoder.plan and EDIR/manifest.json (backend, precision policy,
profiles, hashes of what the plans were built from, build time, plan size, layer count).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import functional as F
from .backend import HAS_PLUGIN_V3, LOGGER, create_network, describe, trt
from .decoder import DECODER_OUTPUTS, decoder_network
from .encoder import ENCODER_OUTPUTS, encoder_network
from .engine import PlanInfo, build_plan, source_entry, write_manifest
from .precision import PrecisionPolicy
from .profiles import ProfileSpec, subsampled_length
from plugins.names import PLUGIN_CHOICES  # noqa: E402 - importable without TensorRT or CUDA

log = logging.getLogger("netdef")

NETWORKS = ("encoder", "decoder")
KNOWN_OUTPUTS = {"encoder": ENCODER_OUTPUTS, "decoder": DECODER_OUTPUTS}


class UsageError(ValueError):
    """Bad arguments or inputs: the CLI prints the message and exits 2."""


@dataclass
class NetworkDefinition:
    """A defined network and everything that must outlive it until the build (builder, host weights)."""

    name: str
    builder: object
    network: object
    ranges: dict
    policy: PrecisionPolicy
    outputs: tuple[str, ...]
    plugins: tuple[str, ...] = ()
    keepalive: list = field(default_factory=list, repr=False)

    @property
    def num_layers(self) -> int:
        return self.network.num_layers


def split_outputs(requested: list[str] | None, config: dict) -> dict[str, tuple[str, ...]]:
    """Per network, the outputs to build; unknown names are an error naming the known ones."""
    available = {"encoder": ENCODER_OUTPUTS, "decoder": tuple(o for o in DECODER_OUTPUTS if o in config["decoder"].get("outputs", DECODER_OUTPUTS))}
    if not requested:
        return available
    chosen = {name: [] for name in NETWORKS}
    for out in requested:
        owner = next((n for n, outs in KNOWN_OUTPUTS.items() if out in outs), None)
        if owner is None:
            known = ", ".join(ENCODER_OUTPUTS + DECODER_OUTPUTS)
            raise UsageError(f"--outputs: unknown output '{out}'; known outputs: {known}")
        chosen[owner].append(out)
    return {n: tuple(o for o in KNOWN_OUTPUTS[n] if o in chosen[n]) or available[n] for n in NETWORKS}


def check_plugins(plugins) -> tuple[str, ...]:
    """Known plugin choices, on a backend with plugin layers; registers the plugin creators."""
    plugins = tuple(plugins)
    for p in plugins:
        if p not in PLUGIN_CHOICES:
            raise UsageError(f"--plugins: unknown plugin '{p}'; expected a comma list of {', '.join(PLUGIN_CHOICES)}")
    if plugins:
        if not HAS_PLUGIN_V3:
            raise UsageError(f"--plugins: {describe()} has no plugin layers (no add_plugin_v3); plugins need full TensorRT (10.x or 11.x)")
        from plugins.cpu_reference import register_cpu_references
        from plugins.trt_plugins import register_plugins

        register_plugins()
        register_cpu_references()  # so --verify evaluates plugin layers with the kernels' references
    return plugins


def define_network(name: str, weights, policy: PrecisionPolicy, profile: ProfileSpec, outputs: tuple[str, ...],
                   plugins: tuple[str, ...] = ()) -> NetworkDefinition:
    """Define the encoder or decoder network from extracted weights (a weights.loader.ModelWeights).

    plugins: "layernorm" (WenetLayerNorm, fused with the residual add before it) and "attention"
    (WenetRelPosAttention, the encoder's attention) replace native layers; full TensorRT only.
    """
    config = weights.config
    builder = trt.Builder(LOGGER)
    network = create_network(builder)
    with F.building(network, policy, check_plugins(plugins)) as ctx:
        if name == "encoder":
            encoder_network(weights.encoder, config, subsampled_length(profile.frames[2]), outputs)
            ranges = profile.encoder_ranges(config["encoder"]["input_dim"])
        elif name == "decoder":
            decoder_network(weights.decoder, config, profile.hyp_len - 1, outputs)
            ranges = profile.decoder_ranges(config["decoder"]["output_size"])
        else:
            raise UsageError(f"unknown network '{name}'; expected one of {NETWORKS}")
    return NetworkDefinition(name, builder, network, ranges, policy, outputs, tuple(plugins), ctx.keepalive)


def make_policy(fp16: bool, fp32_patterns: list[str] = (), fp16_patterns: list[str] = ()) -> PrecisionPolicy:
    base = PrecisionPolicy.fp16() if fp16 else PrecisionPolicy.fp32()
    return base.with_overrides(list(fp32_patterns), list(fp16_patterns))


def build_networks(weights, fp16: bool = False, *, profile: ProfileSpec | None = None, policy: PrecisionPolicy | None = None,
                   outputs: list[str] | None = None, networks=NETWORKS, plugins=()) -> dict[str, NetworkDefinition]:
    """Define the netdef networks (no build): {"encoder": NetworkDefinition, "decoder": ...}.

    `weights` is a weights.loader.ModelWeights or a weights directory.
    """
    from weights.loader import load_weights

    if not hasattr(weights, "config"):
        weights = load_weights(weights)
    profile = profile or ProfileSpec()
    profile.validate()
    policy = policy or make_policy(fp16)
    per_network = split_outputs(outputs, weights.config)
    return {n: define_network(n, weights, policy, profile, per_network[n], tuple(plugins)) for n in networks}


def write_engines(definitions: dict[str, NetworkDefinition], weights, out_dir: Path, *, quiet: bool = False) -> Path:
    """Build defined networks into out_dir/<name>.plan and write the manifest; returns its path.

    The definitions stay usable afterwards (building does not change a network): --verify and
    tools/compare.py evaluate the very networks that were built."""
    plans: list[PlanInfo] = []
    for name, d in definitions.items():
        if not quiet:
            print(f"[netdef] building {name}: {d.num_layers} layers, outputs {', '.join(d.outputs)}", file=sys.stderr, flush=True)
        plans.append(build_plan(d.builder, d.network, name, d.ranges, Path(out_dir) / f"{name}.plan", quiet=quiet))
    first = next(iter(definitions.values()))
    sources = {f: source_entry(Path(weights.dir) / f) for f in ("config.json", "encoder.safetensors", "decoder.safetensors")}
    fp16 = first.policy.default == "fp16"
    return write_manifest(Path(out_dir), kind="netdef", precision="fp16" if fp16 else "fp32", plans=plans, sources=sources,
                          extra={"precision_policy": first.policy.to_json(), "plugins": list(first.plugins)})


def build_engines(weights, out_dir: Path, fp16: bool = False, *, profile: ProfileSpec | None = None,
                  policy: PrecisionPolicy | None = None, outputs: list[str] | None = None, networks=NETWORKS,
                  plugins=(), quiet: bool = False) -> Path:
    """Define and build the netdef engines into out_dir; returns the manifest's path."""
    from weights.loader import load_weights

    if not hasattr(weights, "config"):
        weights = load_weights(weights)
    definitions = build_networks(weights, fp16, profile=profile, policy=policy, outputs=outputs, networks=networks, plugins=plugins)
    return write_engines(definitions, weights, out_dir, quiet=quiet)


def _triple(text: str, flag: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} expects MIN,OPT,MAX integers, got '{text}'") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{flag} expects three values MIN,OPT,MAX, got '{text}'")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m netdef.build",
        description="Build WeNet encoder and decoder TensorRT engines with the network API from extracted weights "
                    "(tools/extract_weights.py), or the ONNX-parser baseline with --parser. With no --weights, the "
                    "built-in default model is exported and extracted on first use and cached.",
    )
    src = ap.add_argument_group("what to build from")
    src.add_argument("--weights", type=Path, help="weights folder from tools/extract_weights.py (config.json + safetensors)")
    src.add_argument("--model", default="aishell", choices=("aishell", "tiny"), help="built-in model used when --weights is not given (default: aishell)")
    src.add_argument("--parser", action="store_true", help="build the baseline from ONNX with TensorRT's ONNX parser instead")
    src.add_argument("--onnx", type=Path, help="with --parser: folder holding encoder.onnx and decoder.onnx (default: the built-in model's)")
    src.add_argument("--parser-fp32-ops", action="append", default=[], metavar="OP",
                     help="with --parser --fp16: ONNX op types the FP16 conversion keeps in FP32, e.g. ReduceMean (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="output folder for the plans and manifest.json (default: out/<model>-<netdef|parser>-<fp16|fp32>)")
    ap.add_argument("--networks", default="encoder,decoder", help="comma list of networks to build (default: encoder,decoder)")
    prec = ap.add_argument_group("precision (networks are strongly typed)")
    prec.add_argument("--fp16", action="store_true", help="FP16 weights and activations, with the FP32 islands of netdef/precision.py")
    prec.add_argument("--fp32", action="append", default=[], metavar="PATTERN", help="keep scopes matching this glob in FP32, e.g. 'encoder.*.conv_module' (repeatable)")
    prec.add_argument("--half", action="append", default=[], metavar="PATTERN", help="force scopes matching this glob to FP16 (repeatable)")
    ap.add_argument("--outputs", default=None, help="comma list of outputs to keep, e.g. encoder_out,encoder_out_lens,decoder_out,best_index (default: all)")
    ap.add_argument("--plugins", default="", help=f"comma list of plugin layers replacing native ones: {','.join(PLUGIN_CHOICES)} (full TensorRT only)")
    prof = ap.add_argument_group("optimization profile")
    prof.add_argument("--batch", type=lambda s: _triple(s, "--batch"), default=ProfileSpec.batch, metavar="MIN,OPT,MAX", help="batch range (default 1,16,64)")
    prof.add_argument("--frames", type=lambda s: _triple(s, "--frames"), default=ProfileSpec.frames, metavar="MIN,OPT,MAX", help="encoder input T range (default 16,256,1024)")
    prof.add_argument("--encoder-out-frames", type=lambda s: _triple(s, "--encoder-out-frames"), default=ProfileSpec.encoder_out_frames, metavar="MIN,OPT,MAX", help="decoder encoder_out T range (default 1,64,256)")
    prof.add_argument("--hyp-len", type=int, default=ProfileSpec.hyp_len, help="decoder hyps_pad_sos_eos length (default 64)")
    ap.add_argument("--verify", action="store_true", help="evaluate the networks on the CPU on the 9 hackathon cases against ONNX Runtime and write verify.json")
    ap.add_argument("--cases", type=Path, default=None, help="with --verify: cases.npz with inputs and ONNX Runtime outputs (default: the built-in model's; --onnx DIR/cases.npz for --parser; else computed from the ONNX files config.json names)")
    ap.add_argument("--quiet", action="store_true", help="no build progress")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    print(f"[netdef] TensorRT backend: {describe()}", file=sys.stderr)
    try:
        return _run(args)
    except (UsageError, ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


def _run(args) -> int:
    networks = tuple(n.strip() for n in args.networks.split(",") if n.strip())
    for n in networks:
        if n not in NETWORKS:
            raise UsageError(f"--networks: unknown network '{n}'; expected a comma list of {', '.join(NETWORKS)}")
    plugins = check_plugins(p.strip() for p in args.plugins.split(",") if p.strip())
    if plugins and args.parser:
        raise UsageError("--plugins applies to netdef builds, not to the --parser baseline")
    profile = ProfileSpec(batch=args.batch, frames=args.frames, encoder_out_frames=args.encoder_out_frames, hyp_len=args.hyp_len)
    profile.validate()
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    precision = "fp16" if args.fp16 else "fp32"
    policy = None if args.parser else make_policy(args.fp16, args.fp32, args.half)

    model = None
    if (args.onnx is None) if args.parser else (args.weights is None):
        from weights.default_model import ensure_model

        model = ensure_model(args.model)
    source = args.onnx if args.parser else args.weights
    out = args.out or Path("out") / f"{args.model if source is None else source.resolve().name}-{'parser' if args.parser else 'netdef'}-{precision}"

    start = time.perf_counter()
    definitions, config = None, None  # the parser's networks are freed after its build; --verify parses again
    if args.parser:
        from .parser_baseline import build_parser_engines

        onnx_dir = args.onnx or model.dir
        manifest = build_parser_engines(onnx_dir, out, fp16=args.fp16, profile=profile, quiet=args.quiet,
                                        fp32_ops=tuple(args.parser_fp32_ops))
    else:
        from weights.loader import load_weights

        weights = load_weights(args.weights or model.weights_dir)
        config = weights.config
        definitions = build_networks(weights, args.fp16, profile=profile, policy=policy, outputs=outputs,
                                     networks=networks, plugins=plugins)
        manifest = write_engines(definitions, weights, out, quiet=args.quiet)
    print(f"[netdef] wrote {manifest} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    if args.verify:
        from .verify import print_table, verify_build

        cases_path = args.cases or (model.cases if model is not None else None)
        if cases_path is None and args.parser and (args.onnx / "cases.npz").is_file():
            cases_path = args.onnx / "cases.npz"
        report = verify_build(manifest, definitions=definitions, config=config, cases_path=cases_path)
        print_table(report)
        return 0 if report["all_pass"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
