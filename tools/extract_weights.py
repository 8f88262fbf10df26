"""Extract a WeNet conformer's weights from its ONNX files into safetensors + config.json.

    python tools/extract_weights.py ENCODER.onnx DECODER.onnx --out WDIR

writes WDIR/encoder.safetensors, WDIR/decoder.safetensors, WDIR/config.json and WDIR/report.json
(docs/weights.md). WDIR is built in a temporary folder and renamed into place, so a failure leaves
no partial output (and an existing WDIR untouched).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weights.extract import ExtractError, extract  # noqa: E402
from netdef.files import atomic_dir, sha256_file  # noqa: E402
from weights.loader import CONFIG_NAME, FILES, REPORT_NAME, load_weights  # noqa: E402


def extract_to(encoder_onnx: str | Path, decoder_onnx: str | Path, out: str | Path) -> dict:
    """Extract into `out` atomically (replacing an existing folder). Returns config.json's dict."""
    from safetensors.numpy import save_file

    out = Path(out)
    config, tensors, report = extract(encoder_onnx, decoder_onnx)
    config["sources"] = {part: {"path": str(path), "sha256": sha256_file(Path(path))}
                         for part, path in (("encoder", encoder_onnx), ("decoder", decoder_onnx))}
    with atomic_dir(out, replace=True) as tmp:
        for part, fname in FILES.items():
            save_file(tensors[part], str(tmp / fname), metadata={"format": config["format"], "network": part})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
        load_weights(tmp)  # what we wrote must read back against its own config
        for f in tmp.iterdir():
            f.chmod(0o644)
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder_onnx")
    parser.add_argument("decoder_onnx")
    parser.add_argument("--out", required=True, help="weights folder WDIR")
    args = parser.parse_args(argv)
    try:
        config = extract_to(args.encoder_onnx, args.decoder_onnx, args.out)
    except (ExtractError, ValueError, OSError) as err:
        print(f"extract_weights: error: {err}", file=sys.stderr)
        return 1
    enc, dec = config["encoder"], config["decoder"]
    print(f"{args.out}: encoder {enc['num_blocks']} blocks d={enc['output_size']} heads={enc['attention_heads']}, "
          f"decoder {dec['num_blocks']} blocks, vocab {config['vocab_size']}, ctc_weight {config['ctc_weight']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
