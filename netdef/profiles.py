"""Optimization-profile shape ranges, shared by netdef builds and the parser baseline.

Defaults: batch 1..64 and T 16..1024 for the encoder; encoder_out T 1..256 (the hackathon's decoder
cases go up to 256, one more than T'(1024) = 255) and hyps [B, beam, 64] for the decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

from .engine import ShapeRanges


def subsampled_length(t: int) -> int:
    """T' of WeNet's Conv2dSubsampling4: two 3x3 stride-2 convolutions without padding."""
    return ((t - 1) // 2 - 1) // 2


@dataclass(frozen=True)
class ProfileSpec:
    batch: tuple[int, int, int] = (1, 16, 64)
    frames: tuple[int, int, int] = (16, 256, 1024)  # encoder input T
    encoder_out_frames: tuple[int, int, int] = (1, 64, 256)  # decoder input T
    hyp_len: int = 64  # decoder hyps_pad_sos_eos last dimension (sos + tokens + eos + padding)
    beam: int = 10

    def validate(self) -> None:
        for name, (lo, opt, hi) in (("batch", self.batch), ("frames", self.frames), ("encoder-out-frames", self.encoder_out_frames)):
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"profile --{name}: needs 1 <= min <= opt <= max, got {lo},{opt},{hi}")
        if subsampled_length(self.frames[0]) <= 0:
            raise ValueError(
                f"profile --frames: min T {self.frames[0]} is too short for x4 subsampling "
                f"(T' = ((T-1)//2-1)//2 = {subsampled_length(self.frames[0])}); use T >= 7"
            )
        if self.hyp_len < 2:
            raise ValueError(f"profile --hyp-len: needs at least 2 (sos and eos), got {self.hyp_len}")

    def encoder_ranges(self, input_dim: int) -> ShapeRanges:
        b, t = self.batch, self.frames
        return {
            "speech": tuple((b[i], t[i], input_dim) for i in range(3)),
            "speech_lengths": tuple((b[i],) for i in range(3)),
        }

    def decoder_ranges(self, d_model: int) -> ShapeRanges:
        b = self.batch
        t_out = self.encoder_out_frames
        return {
            "encoder_out": tuple((b[i], t_out[i], d_model) for i in range(3)),
            "encoder_out_lens": tuple((b[i],) for i in range(3)),
            "hyps_pad_sos_eos": tuple((b[i], self.beam, self.hyp_len) for i in range(3)),
            "hyps_lens_sos": tuple((b[i], self.beam) for i in range(3)),
            "ctc_score": tuple((b[i], self.beam) for i in range(3)),
        }
