"""plugins.reference against independent float64 formulas: PyTorch's LayerNorm, WeNet's own
RelPositionMultiHeadedAttention (tools/wenet_model.py), and plain per-row loops. No GPU needed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plugins import reference
from tools.wenet_model import RelPositionMultiHeadedAttention, make_pad_mask

RNG = np.random.default_rng(20261124)


def rel(out, ref) -> float:
    return float(np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("dim,eps", [(256, 1e-5), (32, 1e-12), (1024, 1e-5)])
def test_layernorm_matches_torch_float64(dim, eps):
    x = RNG.normal(4.0, 3.0, size=(3, 7, dim))  # a large mean: a cancelling variance formula would show
    gamma, beta = RNG.normal(1.0, 0.3, dim), RNG.normal(0.0, 0.3, dim)
    expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (dim,), torch.from_numpy(gamma),
                                              torch.from_numpy(beta), eps).numpy()
    assert rel(reference.layernorm_ref(x, gamma, beta, eps), expected) < 1e-13


def test_layernorm_residual_matches_row_loop():
    x, residual = RNG.normal(size=(5, 64)), RNG.normal(size=(5, 64))
    gamma, beta = RNG.normal(size=64), RNG.normal(size=64)
    total, normed = reference.layernorm_residual_ref(x, residual, gamma, beta, 1e-5)
    for row in range(5):
        values = [a + b for a, b in zip(x[row], residual[row])]
        mean = math.fsum(values) / 64
        var = math.fsum((v - mean) ** 2 for v in values) / 64
        expected = [(v - mean) / math.sqrt(var + 1e-5) * g + b for v, g, b in zip(values, gamma, beta)]
        np.testing.assert_allclose(total[row], values, rtol=0, atol=1e-15)
        np.testing.assert_allclose(normed[row], expected, rtol=1e-12, atol=1e-12)


def test_layernorm_reference_upcasts_fp16_inputs():
    x = RNG.normal(size=(4, 32)).astype(np.float16)
    out = reference.layernorm_ref(x, np.ones(32, np.float16), np.zeros(32, np.float16), 1e-5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-12)


def wenet_attention(batch, seq, heads, dk, lengths):
    """WeNet's module in float64 with random weights, its inputs, and the tensors the plugin sees."""
    torch.manual_seed(int(RNG.integers(1 << 30)))
    hidden = heads * dk
    module = RelPositionMultiHeadedAttention(heads, hidden).double()
    torch.nn.init.normal_(module.pos_bias_u, std=0.5)
    torch.nn.init.normal_(module.pos_bias_v, std=0.5)
    x = torch.randn(batch, seq, hidden, dtype=torch.float64)
    pos_emb = torch.randn(1, seq, hidden, dtype=torch.float64)
    lengths = torch.as_tensor(lengths)
    mask = ~make_pad_mask(lengths, seq).unsqueeze(1)  # [B, 1, T]: keys only, as the encoder passes it
    with torch.no_grad():
        expected = module(x, x, x, mask, pos_emb)
        q, k, v = module.linear_q(x), module.linear_k(x), module.linear_v(x)
        p = module.linear_pos(pos_emb).view(seq, heads, dk).transpose(0, 1)  # [H, T, dk]
    return module, expected.numpy(), [t.numpy() for t in (q, k, v, p, module.pos_bias_u.detach(),
                                                           module.pos_bias_v.detach())], lengths.numpy()


@pytest.mark.parametrize("batch,seq,heads,dk,lengths", [
    (3, 37, 4, 64, [37, 20, 1]),   # odd T', lengths below T'
    (2, 16, 2, 16, [16, 16]),
    (1, 70, 3, 32, [65]),          # lengths past one 64-key tile
])
def test_rel_pos_attention_matches_wenet_module(batch, seq, heads, dk, lengths):
    module, expected, (q, k, v, p, u, w), lengths = wenet_attention(batch, seq, heads, dk, lengths)
    out = reference.rel_pos_attention_ref(q, k, v, p, u, w, lengths, heads)
    with torch.no_grad():
        projected = module.linear_out(torch.from_numpy(out)).numpy()
    assert rel(projected, expected) < 1e-12
    # The flat [B*T, H*dk] layout the kernels use gives the same numbers.
    flat = reference.rel_pos_attention_ref(*(a.reshape(-1, heads * dk) for a in (q, k, v)), p, u, w, lengths, heads)
    np.testing.assert_array_equal(flat.reshape(out.shape), out)


def test_rel_pos_attention_padded_queries_attend_valid_keys_and_length_zero_gives_zeros():
    heads, dk, seq = 2, 16, 9
    q, k, v = (RNG.normal(size=(2, seq, heads * dk)) for _ in range(3))
    p, u, w = RNG.normal(size=(heads, seq, dk)), RNG.normal(size=(heads, dk)), RNG.normal(size=(heads, dk))
    out = reference.rel_pos_attention_ref(q, k, v, p, u, w, [0, 4], heads)
    assert np.all(out[0] == 0.0)
    # A padded query row (index 7 >= length 4) by hand: softmax over the 4 valid keys of each head.
    for h in range(heads):
        sl = slice(h * dk, (h + 1) * dk)
        scores = [(np.dot(q[1, 7, sl] + u[h], k[1, j, sl]) + np.dot(q[1, 7, sl] + w[h], p[h, j])) / math.sqrt(dk)
                  for j in range(4)]
        weights = np.exp(np.array(scores) - max(scores))
        expected = (weights / weights.sum()) @ v[1, :4, sl]
        np.testing.assert_allclose(out[1, 7, sl], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: reference.layernorm_ref(np.zeros((2, 8)), np.ones(4), np.zeros(4), 1e-5), "gamma"),
    (lambda: reference.layernorm_residual_ref(np.zeros((2, 8)), np.zeros((2, 4)), np.ones(8), np.zeros(8), 1e-5),
     "residual"),
    (lambda: reference.rel_pos_attention_ref(np.zeros((2, 3, 10)), np.zeros((2, 3, 10)), np.zeros((2, 3, 10)),
                                             np.zeros((4, 3, 2)), np.zeros((4, 2)), np.zeros((4, 2)), [3, 3], 4),
     "multiple of heads"),
    (lambda: reference.rel_pos_attention_ref(np.zeros((2, 3, 8)), np.zeros((2, 4, 8)), np.zeros((2, 3, 8)),
                                             np.zeros((2, 3, 4)), np.zeros((2, 4)), np.zeros((2, 4)), [3, 3], 2),
     "k "),
])
def test_reference_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
