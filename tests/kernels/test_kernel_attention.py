"""Attention over the paged KV cache: each variant's fast path against the scalar reference."""

from __future__ import annotations

import numpy as np
import pytest

from cpullm.testing.kernels import BEST, REF, PagedKV

# (n_heads, n_kv_heads, head_dim): SmolLM2's 9/3/64, plain multi-head, one shared KV head, and a head_dim
# the SIMD path does not take (48: not a multiple of 16), which must fall back to the reference.
HEADS = [(9, 3, 64), (4, 4, 32), (8, 1, 64), (6, 2, 48)]


def _cache(rng, n_heads, n_kv, hd, block_size, dtype, length):
    n_blocks = -(-length // block_size) + 2
    table = rng.permutation(n_blocks)[: -(-length // block_size)]  # blocks in any physical order
    return PagedKV(
        n_blocks=n_blocks, block_size=block_size, n_kv_heads=n_kv, head_dim=hd, dtype=dtype, block_table=table
    )


@pytest.mark.parametrize(("n_heads", "n_kv", "hd"), HEADS)
@pytest.mark.parametrize("block_size", [16, 32, 5])
@pytest.mark.parametrize("dtype", ["f16", "f32", "q8_0"])
@pytest.mark.parametrize(("n_q", "pos0"), [(1, 0), (1, 40), (7, 0), (33, 17), (19, 64)])
def test_attention_matches_reference(kernels, n_heads, n_kv, hd, block_size, dtype, n_q, pos0):
    if dtype == "q8_0" and hd % 32:
        pytest.skip("a Q8_0 cache needs head_dim % 32 == 0")
    rng = np.random.default_rng(n_q * 100 + pos0 + hd)
    length = pos0 + n_q
    cache = _cache(rng, n_heads, n_kv, hd, block_size, dtype, length)
    k = rng.standard_normal((length, n_kv, hd), dtype=np.float32)
    v = rng.standard_normal((length, n_kv, hd), dtype=np.float32)
    kernels.kv_write(cache, k, v, 0)
    q = rng.standard_normal((n_q, n_heads, hd), dtype=np.float32) * 2.0
    scale = 1.0 / np.sqrt(hd)
    fast = kernels.attention(q, pos0, cache, scale, impl=BEST)
    ref = kernels.attention(q, pos0, cache, scale, impl=REF)
    # The fast path sums in f32 (online softmax); the reference in f64. Outputs are O(1).
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=2e-5)


def test_attention_agrees_with_numpy(kernels):
    """An independent check of the reference itself: softmax(q k^T / sqrt(d)) v with a causal mask."""
    rng = np.random.default_rng(7)
    n_heads, n_kv, hd, n_q, pos0 = 4, 2, 32, 6, 10
    length = pos0 + n_q
    cache = _cache(rng, n_heads, n_kv, hd, 16, "f32", length)
    k = rng.standard_normal((length, n_kv, hd), dtype=np.float32)
    v = rng.standard_normal((length, n_kv, hd), dtype=np.float32)
    kernels.kv_write(cache, k, v, 0)
    q = rng.standard_normal((n_q, n_heads, hd), dtype=np.float32)
    got = kernels.attention(q, pos0, cache, 1.0 / np.sqrt(hd))
    for t in range(n_q):
        for h in range(n_heads):
            kh = h // (n_heads // n_kv)
            s = k[: pos0 + t + 1, kh] @ q[t, h] / np.sqrt(hd)
            p = np.exp(s - s.max())
            want = (p / p.sum()) @ v[: pos0 + t + 1, kh]
            np.testing.assert_allclose(got[t, h], want, rtol=1e-4, atol=1e-5)
