"""A random-weight ~1.1B Llama (TinyLlama's shape) for side-by-side speed runs, quantized by llama.cpp.

    python benchmarks/random_llama.py --out DIR [--mix Q4_0,Q4_K_M] [--llama-python P]

Shape: hidden 2048, 22 layers, FFN 5632, 32 query heads and 4 KV heads of 64 (GQA 8), RoPE base 10000.
The vocabulary and tokenizer are the default model's (49152 tokens, copied from its GGUF), so both engines
load the file; with 49152 rows instead of TinyLlama's 32000 the model has 1.17B parameters. The weights are
Gaussian, scaled 1/sqrt(fan-in), written in F16 with the `gguf` writer, then quantized by llama.cpp's own
`llama_model_quantize` in the bench venv (the same code that makes the files people download). Random
weights say nothing about quality: these files are for speed, load time and memory only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

REPO = Path(__file__).resolve().parents[1]
D, LAYERS, FF, HEADS, KV_HEADS = 2048, 22, 5632, 32, 4
HEAD_DIM = D // HEADS
DEFAULT_MIXES = ("Q4_0", "Q4_K_M")


def _copy_tokenizer(w: gguf.GGUFWriter, source: Path) -> int:
    """Copy the tokenizer.* fields of `source` into `w`; returns the vocabulary size."""
    reader = gguf.GGUFReader(str(source))
    vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, value, vtype, sub_type=field.types[-1])
            if name == "tokenizer.ggml.tokens":
                vocab = len(value)
        else:
            w.add_key_value(name, value, vtype)
    if not vocab:
        raise SystemExit(f"{source} has no tokenizer.ggml.tokens")
    return vocab


def write_f16(path: Path, tokenizer_from: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("random-llama-1.1b")
    w.add_block_count(LAYERS)
    w.add_context_length(2048)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = _copy_tokenizer(w, tokenizer_from)

    def mat(name: str, rows: int, cols: int) -> None:  # [rows, cols] in numpy order: cols is the fan-in
        x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(1 / np.sqrt(cols))
        w.add_tensor(name, x.astype(np.float16))

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, D)
    for i in range(LAYERS):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", D)
        mat(p + "attn_q.weight", D, D)
        mat(p + "attn_k.weight", KV_HEADS * HEAD_DIM, D)
        mat(p + "attn_v.weight", KV_HEADS * HEAD_DIM, D)
        mat(p + "attn_output.weight", D, D)
        vec(p + "ffn_norm.weight", D)
        mat(p + "ffn_gate.weight", FF, D)
        mat(p + "ffn_up.weight", FF, D)
        mat(p + "ffn_down.weight", D, FF)
    vec("output_norm.weight", D)
    mat("output.weight", vocab, D)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, mix: str, llama_python: str) -> None:
    """llama.cpp's quantizer, run in the bench venv through quant_vs_llamacpp's entry point."""
    script = REPO / "benchmarks" / "quant_vs_llamacpp.py"
    subprocess.run(
        [llama_python, str(script), "--llama-worker", "quantize", str(src), str(dst), mix], check=True
    )


def ensure(out: Path, mixes: list[str], llama_python: str) -> dict[str, Path]:
    """The quantized files under `out`, written (and the F16 source removed) when missing."""
    sys.path.insert(0, str(REPO / "engine"))
    from cpullm.model.default_model import default_model_path

    out.mkdir(parents=True, exist_ok=True)
    paths = {mix: out / f"random-llama-1.1b-{mix.lower()}.gguf" for mix in mixes}
    missing = [mix for mix, p in paths.items() if not p.exists()]
    if missing:
        f16 = out / "random-llama-1.1b-f16.gguf"
        if not f16.exists():
            print(f"writing {f16} (random weights, ~2.3 GB)", file=sys.stderr)
            write_f16(f16.with_suffix(".part"), default_model_path())
            f16.with_suffix(".part").rename(f16)
        for mix in missing:
            print(f"quantizing {f16.name} to {mix} with llama.cpp", file=sys.stderr)
            quantize(f16, paths[mix].with_suffix(".part"), mix, llama_python)
            paths[mix].with_suffix(".part").rename(paths[mix])
        f16.unlink()
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "random-llama")
    ap.add_argument("--mix", default=",".join(DEFAULT_MIXES), help="llama.cpp mixes (default Q4_0,Q4_K_M)")
    ap.add_argument("--llama-python", default=str(REPO / ".bench-venv" / "bin" / "python"))
    args = ap.parse_args(argv)
    for mix, path in ensure(args.out, args.mix.split(","), args.llama_python).items():
        print(f"{mix}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
