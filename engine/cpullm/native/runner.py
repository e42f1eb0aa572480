"""The native model over ctypes: weights from a GGUF file, a paged KV cache, one native call per step.

Public API
----------
``NativeModel(model_file, lib=None, threads=None, context=None)``
    Hands the file's memory-mapped tensors to ``cpullm_model_create`` (no copy, except the projections the
    native side fuses; their repacking runs on ``threads``, set first when given). Keeps ``model_file``
    alive as long as the model: the native side borrows its bytes. ``context`` (default: the model's) is
    the most positions it will run, which picks LongRoPE's short or long factors.
    A tensor of a type the library does not run (its own table) raises GGUFError naming it first.
``NativeModel.new_cache(n_blocks, block_size=16, dtype="f16") -> KVCache``
    A paged KV cache of ``n_blocks`` blocks of ``block_size`` tokens in every layer.
``NativeModel.step(cache, batch) -> float32[Σ n_logits, vocab]``
    One forward step for a batch of :class:`SeqChunk` (prefill chunks and decode tokens mixed).
``NativeModel.hidden(cache, batch) -> float32[Σ n_logits, d_model]``
    The same step, returning the final hidden states (after the final norm) of the rows whose logits it
    would compute: for embeddings.
``NativeModel.set_threads(n)``
    Threads the kernels use; results do not depend on it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT

from cpullm.model.config import LONGROPE_TENSORS, ModelConfig, RopeLayout
from cpullm.model.model_file import ModelFile
from cpullm.native import abi, loader
from cpullm.runtime.kv_dtypes import DEFAULT_KV_DTYPE, KV_DTYPES

_ROPE_MODES = {RopeLayout.NORMAL: 0, RopeLayout.NEOX: 2}
_ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}


_GGML_IDS = frozenset(int(t) for t in QT)


class NativeError(RuntimeError):
    """The native engine refused a call; the message is its explanation."""


@dataclass
class SeqChunk:
    """One sequence's share of a step: new ``tokens`` at positions ``pos0 ..``, KV in ``block_table``."""

    tokens: Sequence[int]
    pos0: int
    block_table: Sequence[int]
    n_logits: int = 1


def _error(lib: ctypes.CDLL) -> NativeError:
    return NativeError((lib.cpullm_last_error() or b"unknown native error").decode())


class KVCache:
    """A native paged KV cache (freed with the object)."""

    def __init__(self, model: NativeModel, n_blocks: int, block_size: int, dtype: str) -> None:
        if dtype not in KV_DTYPES:
            raise ValueError(f"KV cache dtype must be one of {', '.join(KV_DTYPES)}, not {dtype!r}")
        self._lib = model.lib
        self.n_blocks, self.block_size, self.dtype = n_blocks, block_size, dtype
        self._model = model  # the cache is shaped by, and must not outlive, its model
        self.handle = self._lib.cpullm_kv_create(
            model.handle, n_blocks, block_size, KV_DTYPES[dtype].native_id
        )
        if not self.handle:
            raise _error(self._lib)

    @property
    def nbytes(self) -> int:
        return int(self._lib.cpullm_kv_bytes(self.handle))

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self._lib.cpullm_kv_free(self.handle)
            self.handle = None


class NativeModel:
    def __init__(
        self,
        model_file: ModelFile,
        lib: ctypes.CDLL | None = None,
        threads: int | None = None,
        context: int | None = None,
    ) -> None:
        self.lib = abi.bind(lib if lib is not None else loader.native()[0])
        if threads is not None:  # before the model: loading repacks the weights on these threads
            self.set_threads(threads)
        supported = {QT(t) for t in loader.tensor_types(self.lib) if t in _GGML_IDS}
        model_file.gguf.check_tensor_types(supported)  # a GGUFError naming the tensor and its type
        self.file = model_file  # the native side borrows the mapped bytes: keep them alive
        self.config: ModelConfig = model_file.config
        c = self.config
        cfg = abi.ModelConfigC(
            n_layers=c.n_layers,
            d_model=c.d_model,
            n_heads=c.n_heads,
            n_kv_heads=c.n_kv_heads,
            head_dim=c.head_dim,
            d_ff=c.d_ff,
            vocab_size=c.vocab_size,
            rms_eps=c.rms_eps,
            rope_mode=_ROPE_MODES[c.rope_layout],
            rope_dims=c.rope_dim,
            rope_theta=c.rope_theta,
            rope_freq_scale=1.0 / c.rope_scale,
            rope_theta_local=c.rope_theta_local,
            # The tensors are views of the file's read-only mapping: once repacked, the native side may
            # drop their pages so the weights are not resident twice.
            release_packed_sources=int(model_file.gguf.mapping is not None),
            qk_norm=int(c.qk_norm),
            activation=_ACTIVATIONS[c.activation],
            post_norms=int(c.post_norms),
            embed_scale=c.embed_scale,
            attn_scale=c.attn_scale,
            attn_softcap=c.attn_softcap,
            final_softcap=c.final_softcap,
            fused_qkv=int(c.fused_qkv),
            fused_gate_up=int(c.fused_gate_up),
            n_experts=c.n_experts,
            n_experts_used=c.n_experts_used,
            d_ff_expert=c.d_ff_expert,
            moe_norm_topk=int(c.moe_norm_topk),
            d_ff_shared=c.d_ff_shared,
            shared_expert_gate=int(c.shared_expert_gate),
            rope_ext_factor=c.yarn.ext_factor,
            rope_attn_factor=c.rope_attn_factor,
            rope_corr_low=c.yarn.corr_low,
            rope_corr_high=c.yarn.corr_high,
        )
        windows = (ctypes.c_int32 * c.n_layers)(*(c.layer_window(i) for i in range(c.n_layers)))
        if any(windows):
            cfg.layer_windows = windows  # read by cpullm_model_create only
        # RoPE frequency factors reach the native side as `rope_freqs.weight`: LongRoPE's pair chosen for the
        # context this model runs with.
        factors = c.rope_factors_tensor(context if context is not None else c.context_length)
        tensors = [
            t for t in model_file.gguf.tensors.values() if t.name not in LONGROPE_TENSORS or t.name == factors
        ]
        refs = (abi.TensorC * len(tensors))()
        for i, t in enumerate(tensors):
            refs[i].name = b"rope_freqs.weight" if t.name == factors else t.name.encode()
            refs[i].type = int(t.type)
            refs[i].rows = t.rows
            refs[i].cols = t.cols
            refs[i].data = t.data.ctypes.data
        self.handle = self.lib.cpullm_model_create(ctypes.byref(cfg), refs, len(tensors))
        if not self.handle:
            raise NativeError(f"{model_file.gguf.path}: {_error(self.lib)}")
        self._logits = np.empty((0, c.vocab_size), dtype=np.float32)

    def packed_names(self) -> list[str]:
        """Tensors whose products read only the native packed copy."""
        need = self.lib.cpullm_model_packed_names(self.handle, None, 0)
        buf = ctypes.create_string_buffer(need + 1)
        self.lib.cpullm_model_packed_names(self.handle, buf, need + 1)
        return [n for n in buf.value.decode().split(",") if n]

    @property
    def repacked_bytes(self) -> int:
        return int(self.lib.cpullm_model_repacked_bytes(self.handle))

    def set_threads(self, n: int) -> None:
        if self.lib.cpullm_set_num_threads(int(n)) != 0:
            raise _error(self.lib)

    def new_cache(self, n_blocks: int, block_size: int = 16, dtype: str = DEFAULT_KV_DTYPE) -> KVCache:
        return KVCache(self, n_blocks, block_size, dtype)

    def step(self, cache: KVCache, batch: Sequence[SeqChunk]) -> np.ndarray:
        """Run one forward step; returns float32[Σ n_logits, vocab] (a view reused by the next step)."""
        n_out = sum(s.n_logits for s in batch)
        if self._logits.shape[0] < n_out:
            self._logits = np.empty((n_out, self.config.vocab_size), dtype=np.float32)
        return self._run(self.lib.cpullm_model_step, cache, batch, self._logits)

    def hidden(self, cache: KVCache, batch: Sequence[SeqChunk]) -> np.ndarray:
        """Run one forward step; returns the wanted rows' final hidden states, float32[Σ n_logits,
        d_model] (a new array)."""
        out = np.empty((sum(s.n_logits for s in batch), self.config.d_model), dtype=np.float32)
        return self._run(self.lib.cpullm_model_hidden, cache, batch, out)

    def _run(
        self, fn: Callable[..., int], cache: KVCache, batch: Sequence[SeqChunk], out: np.ndarray
    ) -> np.ndarray:
        if not batch:
            raise ValueError("a step needs at least one sequence")
        tokens = np.ascontiguousarray(np.concatenate([np.asarray(s.tokens, dtype=np.int32) for s in batch]))
        tables = [np.ascontiguousarray(s.block_table, dtype=np.int32) for s in batch]
        seqs = (abi.SeqC * len(batch))()
        n_out = 0
        for i, (s, table) in enumerate(zip(batch, tables, strict=True)):
            seqs[i].n_tokens = len(s.tokens)
            seqs[i].pos0 = s.pos0
            seqs[i].block_table = table.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
            seqs[i].n_blocks = len(table)
            seqs[i].n_logits = s.n_logits
            n_out += s.n_logits
        pointer = tokens.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        if fn(self.handle, cache.handle, pointer, seqs, len(batch), out.ctypes.data) != 0:
            raise _error(self.lib)
        return out[:n_out]

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.cpullm_model_free(self.handle)
            self.handle = None
