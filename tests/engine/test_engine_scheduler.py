"""Continuous batching, the paged KV cache's bookkeeping, prefix caching and the LLM API, on tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec, write_tiny_gguf

from cpullm.runtime.engine import Engine
from cpullm.runtime.kv_blocks import BlockManager, BlockTable, OutOfBlocks
from cpullm.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module", params=["llama", "qwen3", "gemma2", "phi3"])
def tiny_model(native_lib_dir: Path, tmp_path_factory, request) -> Path:
    """Every engine test runs on each block variant: llama, qwen3 (Q/K norm), gemma2 (sliding window,
    soft-caps...), phi3 (fused projections)."""
    os.environ["CPULLM_LIB_DIR"] = str(native_lib_dir)
    spec = TinySpec(arch=request.param, weight_type=QT.Q8_0, context_length=128)
    return write_tiny_gguf(tmp_path_factory.mktemp("sched") / "m.gguf", spec)


def _engine(path: Path, **kw) -> Engine:
    kw.setdefault("threads", 1)
    return Engine(path, **kw)


def _run(
    engine: Engine, prompts: dict[str, list[int]], params: SamplingParams = GREEDY
) -> dict[str, list[int]]:
    for rid, p in prompts.items():
        engine.add_request(rid, p, params)
    out: dict[str, list[int]] = {rid: [] for rid in prompts}
    while engine.has_work():
        for o in engine.step():
            out[o.request_id] += o.token_ids
    return out


PROMPTS = {
    "a": [5, 6, 7, 8, 9, 10, 11],
    "b": list(range(20, 60)),
    "c": [3],
    "d": list(range(100, 133)),
}


def test_greedy_output_is_the_same_alone_or_batched(tiny_model):
    alone = {rid: _run(_engine(tiny_model), {rid: p})[rid] for rid, p in PROMPTS.items()}
    batched = _run(_engine(tiny_model, step_tokens=16), PROMPTS)  # chunked prefill mixed with decodes
    assert batched == alone
    assert all(len(v) == GREEDY.max_tokens for v in alone.values())


def test_q8_0_cache_holds_more_tokens_and_batches_like_alone(tiny_model):
    """--kv-cache-dtype q8_0: the same memory cap holds 2/1.0625 as many blocks as f16, and batching
    still changes no output (each sequence reads only its own quantized keys)."""
    f16, q8 = _engine(tiny_model), _engine(tiny_model, kv_dtype="q8_0")
    assert abs(q8.blocks.n_blocks - f16.blocks.n_blocks * 2 / (34 / 32)) < 2
    assert q8.cache.nbytes <= f16.cache.nbytes
    alone = {rid: _run(_engine(tiny_model, kv_dtype="q8_0"), {rid: p})[rid] for rid, p in PROMPTS.items()}
    assert _run(_engine(tiny_model, kv_dtype="q8_0", step_tokens=16), PROMPTS) == alone


def test_same_output_at_one_and_two_threads(tiny_model):
    assert _run(_engine(tiny_model, threads=1), PROMPTS) == _run(_engine(tiny_model, threads=2), PROMPTS)


def test_full_cache_makes_work_wait_not_fail(tiny_model):
    reference = _run(_engine(tiny_model), PROMPTS)
    # Room for about two sequences: the rest wait in the queue, running ones may be preempted.
    tiny_cache_gb = (
        8 * (2 * 2 * 16 * 128 * 2) / (1 << 30)
    )  # 8 blocks of 16 tokens (2 layers, kv_dim 128, f16)
    engine = _engine(tiny_model, kv_cache_gb=tiny_cache_gb, max_model_len=64)
    assert engine.blocks.n_blocks == 8
    assert _run(engine, PROMPTS) == reference
    assert engine.blocks.n_used == 0 or engine.blocks.n_free == engine.blocks.n_blocks


def test_abort_frees_blocks_at_once(tiny_model):
    engine = _engine(tiny_model)
    engine.add_request("x", PROMPTS["b"], GREEDY)
    engine.step()
    assert engine.blocks.n_used > 0
    assert engine.abort("x") is True
    assert engine.blocks.n_used == 0 and not engine.has_work()
    assert engine.abort("x") is False


def test_shared_prefix_reuses_cached_blocks(tiny_model):
    engine = _engine(tiny_model)
    system = list(range(40, 88))  # three full blocks of 16
    first = _run(engine, {"p1": [*system, 1, 2]})
    hits_before = engine.blocks.prefix_hits
    second = _run(engine, {"p2": [*system, 1, 2]})
    assert engine.blocks.prefix_hits - hits_before == 48
    assert first["p1"] == second["p2"]


def test_requests_that_cannot_fit_are_refused_clearly(tiny_model):
    engine = _engine(tiny_model)
    with pytest.raises(ValueError, match="the prompt has 200 tokens, but this model's context is 128 tokens"):
        engine.add_request("long", [1] * 200, GREEDY)
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("empty", [], GREEDY)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request("bad", [10**6], GREEDY)
    assert not engine.has_work()


def test_generation_stops_at_the_context_length(tiny_model):
    engine = _engine(tiny_model, max_model_len=40)
    out = _run(
        engine, {"a": list(range(1, 30))}, SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    )
    assert len(out["a"]) == 40 - 29


def test_block_manager_accounting():
    bm = BlockManager(4, 2)
    t1, t2 = BlockTable(), BlockTable()
    bm.ensure(t1, 5)  # 3 blocks
    assert bm.n_used == 3
    with pytest.raises(OutOfBlocks):
        bm.ensure(t2, 3)  # needs 2, one left: all or nothing
    assert bm.n_used == 3 and t2.blocks == []
    bm.register_full(t1, [1, 2, 3, 4, 5])
    bm.release(t1)
    assert bm.n_free == 4
    t3 = BlockTable()
    assert bm.match_prefix(t3, [1, 2, 3, 4, 9]) == 4  # two cached full blocks
    assert bm.match_prefix(BlockTable(), [1, 2]) == 0  # the last token is always computed


def test_llm_api_generate_chat_and_stream(tiny_model):
    from cpullm import LLM

    llm = LLM(tiny_model, threads=1)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    outs = llm.generate(["hello world", "the"], params)
    assert [o.completion_tokens for o in outs] == [6, 6]
    assert outs[0].text == llm.generate("hello world", params)[0].text
    chat = llm.chat([{"role": "user", "content": "hello"}], params)[0]
    streamed = "".join(llm.stream_chat([{"role": "user", "content": "hello"}], params))
    assert streamed == chat.text
    assert not llm.engine.has_work() and llm.engine.blocks.n_used == 0


def _serve_one(bm: BlockManager, tokens: list[int], generated: int) -> list[int]:
    """One request through the block manager as the engine drives it; returns the blocks it used."""
    table = BlockTable()
    bm.match_prefix(table, tokens)
    bm.ensure(table, len(tokens) + generated)
    bm.register_full(table, [*tokens, *range(1000, 1000 + generated)])
    used = list(table.blocks)
    bm.release(table)
    return used


def test_light_load_reuses_released_blocks_instead_of_walking_the_pool():
    """One request at a time with distinct prompts touches the blocks of one request, not the pool."""
    bm = BlockManager(1000, 16)
    touched: set[int] = set()
    for i in range(200):
        prompt = [i * 1000 + t for t in range(100)]  # 7 blocks, shared with no other request
        touched.update(_serve_one(bm, prompt, generated=20))
        assert bm.n_used == 0
    assert touched == set(range(bm.blocks_for(120)))  # the 8 blocks of the first request, reused 199 times
    assert bm.n_touched == len(touched) and bm.n_free == 1000


def test_a_shared_system_prompt_stays_cached_while_other_blocks_are_reused():
    bm = BlockManager(1000, 16)
    system = list(range(48))  # three full blocks
    touched: set[int] = set()
    for i in range(50):
        hits = bm.prefix_hits
        touched.update(_serve_one(bm, [*system, *range(i * 1000 + 100, i * 1000 + 140)], generated=10))
        assert bm.prefix_hits - hits == (48 if i else 0)  # evicted tail first: the head stays cached
    assert len(touched) == bm.n_touched == bm.blocks_for(48 + 40 + 10)


def test_engine_under_light_load_touches_few_blocks(tiny_model):
    engine = _engine(tiny_model)
    for i, prompt in enumerate(PROMPTS.values()):
        _run(engine, {f"r{i}": prompt})
    most = max(engine.blocks.blocks_for(len(p) + GREEDY.max_tokens) for p in PROMPTS.values())
    assert engine.blocks.n_touched <= most < engine.blocks.n_blocks // 4


def test_embeddings_are_the_normalised_mean_of_the_reference_hidden_states(tiny_model):
    """Engine.embed (cpullm_model_hidden) against the NumPy reference, prefilled in chunks of 5 tokens
    while another sequence holds blocks; its own blocks go back at once."""
    from cpullm.model.model_file import ModelFile
    from cpullm.testing import reference

    engine = _engine(tiny_model, step_tokens=5)
    engine.add_request("busy", [1, 2, 3], GREEDY)
    engine.step()
    used = engine.blocks.n_used
    tokens = [(7 * i + 3) % engine.config.vocab_size for i in range(23)]
    got = engine.embed(tokens)
    assert engine.blocks.n_used == used
    rows = reference.hidden_states(
        engine.config, reference.dequantize_weights(ModelFile.open(tiny_model)), tokens
    )
    want = rows.mean(axis=0)
    want /= np.linalg.norm(want)
    assert got.shape == (engine.config.d_model,) and abs(np.linalg.norm(got) - 1) < 1e-5
    assert np.abs(got - want).max() < 5e-3, np.abs(got - want).max()  # 2e-3 measured (Q8_0 weights)
    assert np.abs(engine.embed(tokens[:5]) - got).max() > 1e-3  # a different text, a different vector
    with pytest.raises(ValueError, match="empty"):
        engine.embed([])
