"""The precision policy's matching rules (pure logic: no network)."""
import pytest

from netdef.precision import PrecisionPolicy


def test_fp16_policy_islands():
    p = PrecisionPolicy.fp16()
    assert p.dtype_for("encoder.global_cmvn") == "fp32"
    assert p.dtype_for("encoder.encoders.3") == "fp32"  # the residual stream
    assert p.dtype_for("encoder.encoders.3.self_attn") == "fp16"
    assert p.dtype_for("encoder.encoders.3.self_attn.norm_mha") == "fp32"
    assert p.dtype_for("encoder.encoders.11.conv_module.depthwise_conv") == "fp16"
    assert p.dtype_for("decoder.decoders.0.src_attn.norm2") == "fp32"
    assert p.dtype_for("decoder.output_layer") == "fp16"
    assert p.dtype_for("decoder.score") == "fp32"


def test_prefix_match_and_override_order():
    p = PrecisionPolicy.fp16().with_overrides(fp32=["encoder.*.conv_module"])
    # a pattern matching a scope also covers everything inside it
    assert p.dtype_for("encoder.encoders.2.conv_module.glu") == "fp32"
    assert p.dtype_for("encoder.encoders.2.feed_forward") == "fp16"
    # overrides come first: forcing FP16 beats a default island
    q = PrecisionPolicy.fp16().with_overrides(fp16=["ctc.*"])
    assert q.dtype_for("ctc.log_softmax") == "fp16"


def test_fp32_policy_is_all_fp32():
    p = PrecisionPolicy.fp32()
    assert {p.dtype_for(s) for s in ("encoder.embed", "encoder.encoders.0.self_attn.softmax", "decoder.score")} == {"fp32"}


def test_bad_dtype_is_named():
    with pytest.raises(ValueError, match="'encoder.embed' maps to 'int8'"):
        PrecisionPolicy("fp16", [("encoder.embed", "int8")])
