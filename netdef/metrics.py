"""The 2022 hackathon's accuracy metrics and pass thresholds (hackathon/testEncoderAndDecoder.py).

a = max |out - ref|;  r = median(|out - ref| / (|ref| + eps)), eps 5e-5 for encoder_out, else 1e-5.
"""
from __future__ import annotations

import numpy as np

HACKATHON_CASES = [(b, t) for b in (1, 4, 16) for t in (16, 64, 256)]

# output -> (eps for r, max a, max r); None: that metric is not judged for the output.
THRESHOLDS: dict[str, tuple[float, float | None, float | None]] = {
    "encoder_out": (5e-5, 3.5e-2, 2e-3),
    "encoder_out_lens": (1e-5, None, 1e-1),
    "decoder_out": (1e-5, 4e-1, 2e-4),
    "best_index": (1e-5, None, 1e-1),
}


def hackathon_metrics(output: str, got: np.ndarray, ref: np.ndarray) -> dict:
    """{"a", "r", "pass"} for one output; shapes must match."""
    if got.shape != ref.shape:
        raise ValueError(f"{output}: shape {got.shape} differs from the reference's {ref.shape}")
    eps, max_a, max_r = THRESHOLDS.get(output, (1e-5, None, None))
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    a = float(diff.max()) if diff.size else 0.0
    r = float(np.median(diff / (np.abs(ref.astype(np.float64)) + eps))) if diff.size else 0.0
    ok = (max_a is None or a < max_a) and (max_r is None or r < max_r) and bool(np.isfinite(got.astype(np.float64)).all())
    return {"a": a, "r": r, "pass": bool(ok)}
