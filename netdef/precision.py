"""The precision policy: one table from scope names to a compute type.

Every layer netdef creates lives in a dotted scope named after WeNet's modules
(`encoder.encoders.3.conv_module`, `decoder.decoders.0.src_attn.softmax`, ...). A policy is an
ordered list of (glob pattern, "fp32" | "fp16"); the first pattern that matches the scope name, or
one of its dotted prefixes, decides. Command-line overrides (`--fp32 PATTERN`) go in front.

The FP16 islands below were chosen by measurement (FP16 CPU evaluation against ONNX Runtime on the
hackathon cases), recorded in docs/precision.md.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

DTYPES = ("fp32", "fp16")

# The islands that stay FP32 in an --fp16 build, with why (see docs/precision.md for the numbers).
# First match wins, so the specific patterns come before the block-level ones.
FP16_ISLANDS: list[tuple[str, str]] = [
    # Raw fbank values reach ~20 and CMVN subtracts near-equal numbers: keep the input affine exact.
    ("encoder.global_cmvn", "fp32"),
    # LayerNorm statistics in FP32: FP16 mean/variance over 256 values was the largest single error.
    ("*.norm_*", "fp32"),
    ("*.norm[0-9]", "fp32"),
    ("*.after_norm", "fp32"),
    # The residual stream stays FP32 (the block scope), while every sub-module inside it
    # (feed-forward, attention, convolution: all the matrix multiplies) computes in FP16.
    ("encoder.encoders.*.*", "fp16"),
    ("encoder.encoders.*", "fp32"),
    ("decoder.decoders.*.*", "fp16"),
    ("decoder.decoders.*", "fp32"),
    # log-softmax over the vocabulary: outputs are compared in absolute terms down to ~-30.
    ("ctc.log_softmax", "fp32"),
    ("decoder.log_softmax", "fp32"),
    # The rescoring sum over up to 63 tokens feeds an argmax: FP16 would flip near-ties.
    ("decoder.score", "fp32"),
]


@dataclass
class PrecisionPolicy:
    default: str = "fp32"
    rules: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        for pattern, dtype in [("<default>", self.default), *self.rules]:
            if dtype not in DTYPES:
                raise ValueError(f"precision policy: '{pattern}' maps to {dtype!r}; expected one of {DTYPES}")

    def dtype_for(self, scope: str) -> str:
        prefixes = scope.split(".")
        candidates = [".".join(prefixes[: i + 1]) for i in range(len(prefixes))]
        for pattern, dtype in self.rules:
            if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
                return dtype
        return self.default

    def with_overrides(self, fp32: list[str] = (), fp16: list[str] = ()) -> "PrecisionPolicy":
        front = [(p, "fp32") for p in fp32] + [(p, "fp16") for p in fp16]
        return PrecisionPolicy(self.default, front + self.rules)

    def to_json(self) -> dict:
        return {"default": self.default, "rules": [list(r) for r in self.rules]}

    @classmethod
    def fp32(cls) -> "PrecisionPolicy":
        return cls("fp32", [])

    @classmethod
    def fp16(cls) -> "PrecisionPolicy":
        return cls("fp16", list(FP16_ISLANDS))
