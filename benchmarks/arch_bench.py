"""`cpullm bench` on random-weight models of every architecture at one size, side by side.

Writes one Q8_0 GGUF per architecture with Qwen3-0.6B's shape (d 1024, 28 layers, FFN 3072, 16/8 heads
of 128, vocabulary 151936; the MoE rows swap the FFN for 8 experts of 768, top 2), then runs
`cpullm bench --json` on each in turn, round after round (A B C A B C ...), and prints the medians and
each architecture's ratio to llama's. Random weights: speed only, nothing about quality.

    python benchmarks/arch_bench.py [--out DIR] [--rounds 3] [-p 128] [-n 32] [-t 2] [--arch llama,gemma3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

D, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FF, VOCAB = 1024, 28, 16, 8, 128, 3072, 151936
EXPERTS, EXPERTS_USED, FF_EXPERT = 8, 2, 768
ARCHS = ("llama", "qwen3", "gemma2", "gemma3", "phi3", "qwen3moe")


def write_model(arch: str, path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(HEAD_DIM)
    if arch in ("gemma2", "gemma3"):
        w.add_sliding_window(512)
    if arch == "qwen3moe":
        w.add_expert_count(EXPERTS)
        w.add_expert_used_count(EXPERTS_USED)
        w.add_expert_feed_forward_length(FF_EXPERT)

    def mat(name: str, rows: int, cols: int, scale: float = 1.0) -> None:
        x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale / np.sqrt(cols))
        w.add_tensor(name, gguf.quants.quantize(x, QT.Q8_0), raw_dtype=QT.Q8_0)

    def stack(name: str, rows: int, cols: int) -> None:  # experts: [expert, rows, cols]
        x = rng.standard_normal((EXPERTS, rows, cols), dtype=np.float32) * np.float32(1 / np.sqrt(cols))
        w.add_tensor(name, gguf.quants.quantize(x, QT.Q8_0), raw_dtype=QT.Q8_0)

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    mat("token_embd.weight", VOCAB, D, 1.0 if arch.startswith("gemma") else np.sqrt(D))
    for i in range(LAYERS):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", D)
        if arch == "phi3":
            mat(p + "attn_qkv.weight", q + 2 * kv, D)
        else:
            mat(p + "attn_q.weight", q, D)
            mat(p + "attn_k.weight", kv, D)
            mat(p + "attn_v.weight", kv, D)
        if arch in ("qwen3", "gemma3", "qwen3moe"):
            vec(p + "attn_q_norm.weight", HEAD_DIM)
            vec(p + "attn_k_norm.weight", HEAD_DIM)
        mat(p + "attn_output.weight", D, q)
        vec(p + "ffn_norm.weight", D)
        if arch == "qwen3moe":
            w.add_tensor(
                p + "ffn_gate_inp.weight", (rng.standard_normal((EXPERTS, D)) / np.sqrt(D)).astype(np.float32)
            )
            stack(p + "ffn_gate_exps.weight", FF_EXPERT, D)
            stack(p + "ffn_up_exps.weight", FF_EXPERT, D)
            stack(p + "ffn_down_exps.weight", D, FF_EXPERT)
        elif arch == "phi3":
            mat(p + "ffn_up.weight", 2 * FF, D)
            mat(p + "ffn_down.weight", D, FF)
        else:
            mat(p + "ffn_gate.weight", FF, D)
            mat(p + "ffn_up.weight", FF, D)
            mat(p + "ffn_down.weight", D, FF)
        if arch.startswith("gemma"):
            vec(p + "post_attention_norm.weight", D)
            vec(p + "post_ffw_norm.weight", D)
    vec("output_norm.weight", D)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def bench(path: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "cpullm", "bench", str(path), "-p", str(args.p), "-n", str(args.n)]
    cmd += ["-t", str(args.t), "-r", "1", "--json"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {r["test"]: r["tokens_per_second"]["median"] for r in out["results"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("arch-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--arch", default=",".join(ARCHS))
    args = ap.parse_args()
    archs = args.arch.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for arch in archs:
        paths[arch] = args.out / f"{arch}-0.6b-q8_0.gguf"
        if not paths[arch].exists():
            print(f"writing {paths[arch]}", file=sys.stderr)
            write_model(arch, paths[arch])
    samples: dict[str, dict[str, list[float]]] = {a: {} for a in archs}
    for r in range(args.rounds):
        for arch in archs:
            for test, tps in bench(paths[arch], args).items():
                samples[arch].setdefault(test, []).append(tps)
            print(f"round {r + 1} {arch}: {samples[arch]}", file=sys.stderr)
    tests = list(samples[archs[0]])
    base = {t: statistics.median(samples[archs[0]][t]) for t in tests}
    print(f"| architecture | {' | '.join(f'{t} tok/s (× {archs[0]})' for t in tests)} |")
    print("| --- |" + " ---: |" * len(tests))
    for arch in archs:
        medians = [statistics.median(samples[arch][t]) for t in tests]
        cells = [f"{m:.1f} (× {m / base[t]:.2f})" for m, t in zip(medians, tests, strict=True)]
        print(f"| {arch} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
