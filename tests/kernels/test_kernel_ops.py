"""Row and element-wise ops and attention: the reference against numpy (float64), and every runnable
variant's entry points (BEST) against the reference in the same library."""

from __future__ import annotations

import numpy as np
import pytest

from cpullm.testing.kernels import BEST, REF, KernelError, PagedKV

RTOL = 2e-6  # relative, for element-wise ops on O(1) values (exp and division rounding)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("n", [1, 7, 576, 1000])
def test_rmsnorm(kernels, n):
    rng = _rng(n)
    x = rng.standard_normal((3, n), dtype=np.float32)
    w = rng.standard_normal(n, dtype=np.float32)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + 1e-5) * w
    for impl in (REF, BEST):
        np.testing.assert_allclose(kernels.rmsnorm(x, w, 1e-5, impl=impl), want, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("n", [1, 15, 1536, 4099])
def test_silu_mul_and_add(kernels, n):
    rng = _rng(n)
    g = rng.standard_normal(n, dtype=np.float32) * 6
    u = rng.standard_normal(n, dtype=np.float32)
    g64 = g.astype(np.float64)
    want = g64 / (1 + np.exp(-g64)) * u
    for impl in (REF, BEST):
        np.testing.assert_allclose(kernels.silu_mul(g, u, impl=impl), want, rtol=RTOL, atol=1e-7)
        np.testing.assert_array_equal(kernels.add(g, u, impl=impl), g + u)


@pytest.mark.parametrize("n", [1, 3, 100, 49152])
def test_softmax_and_argmax(kernels, n):
    rng = _rng(n)
    x = rng.standard_normal(n, dtype=np.float32) * 10
    e = np.exp(x.astype(np.float64) - x.max())
    for impl in (REF, BEST):
        np.testing.assert_allclose(kernels.softmax(x, impl=impl), e / e.sum(), rtol=1e-5, atol=1e-9)
        assert kernels.argmax(x, impl=impl) == int(np.argmax(x))


def test_argmax_takes_the_first_of_ties_and_skips_nan(kernels):
    x = np.array([1.0, 5.0, np.nan, 5.0, -2.0], dtype=np.float32)
    assert kernels.argmax(x) == 1
    assert kernels.argmax(np.array([np.nan, 0.5], dtype=np.float32)) == 1


def _rope_numpy(x, pos, neox, theta, rot, freq_factors=None):
    out = x.astype(np.float64).copy()
    half = rot // 2
    inv = theta ** (-2.0 * np.arange(half) / rot)
    if freq_factors is not None:
        inv = inv / freq_factors
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # [tokens, half]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = out[..., :half].copy(), out[..., half:rot].copy()
        out[..., :half], out[..., half:rot] = a * c - b * s, a * s + b * c
    else:
        a, b = out[..., 0:rot:2].copy(), out[..., 1:rot:2].copy()
        out[..., 0:rot:2], out[..., 1:rot:2] = a * c - b * s, a * s + b * c
    return out


@pytest.mark.parametrize("neox", [False, True], ids=["interleaved", "neox"])
@pytest.mark.parametrize("rot", [64, 32])
def test_rope_matches_numpy(kernels, neox, rot):
    rng = _rng(rot + neox)
    x = rng.standard_normal((5, 3, 64), dtype=np.float32)
    pos = np.array([0, 1, 7, 100, 2047], dtype=np.int32)
    ff = rng.uniform(1, 8, rot // 2).astype(np.float32)
    for factors in (None, ff):
        want = _rope_numpy(x, pos, neox, 10000.0, rot, factors)
        for impl in (REF, BEST):
            got = kernels.rope(x, pos, neox=neox, rot_dims=rot, freq_factors=factors, impl=impl)
            # Angles up to 2047 rad in f32 (as ggml computes them): absolute error ~ 2047 · 2^-24 · few.
            np.testing.assert_allclose(got, want, rtol=0, atol=5e-4)
    assert np.array_equal(kernels.rope(x, pos * 0, neox=neox, rot_dims=rot), x)  # position 0: identity


def _attention_numpy(q, k, v, pos0, scale):
    n_q, n_heads, _ = q.shape
    group = n_heads // k.shape[1]
    out = np.zeros(q.shape)
    for t in range(n_q):
        for h in range(n_heads):
            kk, vv = k[: pos0 + t + 1, h // group], v[: pos0 + t + 1, h // group]
            s = kk.astype(np.float64) @ q[t, h] * scale
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ vv
    return out


def _q8_0_numpy(x):
    """GGUF Q8_0 of the last axis in groups of 32, dequantized: d = max|x| / 127 as f16, q = round(x / d)."""
    g = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(g).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
    q = np.rint(g * inv)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize(
    ("n_heads", "n_kv", "hd", "bs", "n_ctx", "n_q"),
    [(9, 3, 64, 16, 37, 1), (4, 4, 32, 8, 20, 20), (6, 2, 48, 32, 70, 5), (2, 1, 64, 4, 1, 1)],
)
def test_attention_paged_gqa_matches_numpy(kernels, dtype, n_heads, n_kv, hd, bs, n_ctx, n_q):
    if dtype == "q8_0" and hd % 32:
        pytest.skip("a Q8_0 cache needs head_dim % 32 == 0 (refused: test_q8_0_cache_refuses_head_dim)")
    rng = _rng(n_ctx + n_q)
    n_blocks = (n_ctx + bs - 1) // bs
    table = rng.permutation(n_blocks + 3)[:n_blocks]  # scattered physical blocks, some unused
    cache = PagedKV(
        n_blocks=n_blocks + 3, block_size=bs, n_kv_heads=n_kv, head_dim=hd, dtype=dtype, block_table=table
    )
    k = rng.standard_normal((n_ctx, n_kv, hd), dtype=np.float32)
    v = rng.standard_normal((n_ctx, n_kv, hd), dtype=np.float32)
    # Written in two chunks, as prefill then decode would.
    split = n_ctx // 2
    if split:
        kernels.kv_write(cache, k[:split], v[:split], 0)
    kernels.kv_write(cache, k[split:], v[split:], split)
    if dtype == "f16":
        k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    if dtype == "q8_0":  # the values the cache holds, by an independent quantizer
        k, v = _q8_0_numpy(k), _q8_0_numpy(v)
    pos0 = n_ctx - n_q
    q = rng.standard_normal((n_q, n_heads, hd), dtype=np.float32)
    scale = 1 / np.sqrt(hd)
    want = _attention_numpy(q, k, v, pos0, scale)
    ref = kernels.attention(q, pos0, cache, scale, impl=REF)
    np.testing.assert_allclose(ref, want, rtol=0, atol=1e-5)
    for threads in (1, 2, 3):
        kernels.set_num_threads(threads)
        try:
            best = kernels.attention(q, pos0, cache, scale, impl=BEST)
        finally:
            kernels.set_num_threads(1)
        np.testing.assert_allclose(best, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", ["generic"])
def test_q8_0_cache_refuses_head_dim(kernels):
    cache = PagedKV(n_blocks=1, block_size=16, n_kv_heads=1, head_dim=48, dtype="q8_0", block_table=[0])
    with pytest.raises(KernelError, match="Q8_0 KV cache needs a head dimension that is a multiple of 32"):
        kernels.kv_write(cache, np.zeros((1, 1, 48), np.float32), np.zeros((1, 1, 48), np.float32), 0)


@pytest.mark.parametrize("variant", ["generic"])
def test_ops_reject_bad_arguments(kernels):
    with pytest.raises(KernelError, match="rope mode must be 0"):
        kernels._check(kernels.lib.cpullm_rope(0, b"x" * 16, 1, 1, 4, b"x" * 4, 1, 4, 1e4, 1.0, None))
    with pytest.raises(KernelError, match="n_heads 3 must be a positive multiple of n_kv_heads 2"):
        cache = PagedKV(n_blocks=1, block_size=4, n_kv_heads=2, head_dim=8, dtype="f32", block_table=[0])
        kernels.attention(np.zeros((1, 3, 8), np.float32), 0, cache, 1.0)
    with pytest.raises(KernelError, match="block_table entries must be in"):
        PagedKV(n_blocks=1, block_size=4, n_kv_heads=1, head_dim=8, dtype="f32", block_table=[1])
