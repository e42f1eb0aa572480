"""Structured outputs and tool calls on the real default model (SmolLM2-135M-Instruct Q4_1), through the
official openai client against `cpullm serve` on loopback.

    flock /tmp/cpubuild-bench.lock env CPULLM_LIB_DIR=build/test-x86_64 \\
        .venv/bin/python benchmarks/structured_outputs.py [--requests 100] [--concurrency 8] \\
        [--decode-repeats 5] [--decode-tokens 128] [--batch 1,16] [--parts json,tools,decode,engine] \\
        [--threads N] [--url URL] [--json out.json]

Without ``--url`` it starts the server itself on the default model. The parts:

1. ``--requests`` JSON-schema requests (a person record: strings bounded by ``maxLength``, an integer,
   an enum, an array of at most 3 tags; varied prompts, temperature 0.8, distinct seeds): how many finish
   (``stop``), parse and validate against the schema.
2. ``--requests`` tool-call requests (two functions), half ``tool_choice: "required"``, half naming one
   function: how many return tool calls whose names are offered and whose arguments parse and validate
   against the function's parameters. Also ``auto`` for a tenth as many: how many call (the model was
   not trained for tools), and of those how many validate.
3. ``engine``: the same at batch 1 in the bare engine (no HTTP), timing decode steps only.
4. Decode rate at each ``--batch`` size (concurrent streams): tokens/s per stream, (tokens - 1) / (last
   chunk - first chunk), with a JSON-schema mask and unconstrained (``ignore_eos``), interleaved
   ``--decode-repeats`` times; the median, and the masked rate as a fraction of the unconstrained one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import REPO, started_server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "maxLength": 40},
        "job": {"enum": ["engineer", "teacher", "doctor", "artist", "other"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "job", "tags"],
    "additionalProperties": False,
}
PEOPLE = (
    "Maria, 34, a teacher from Lisbon who loves hiking", "Tom is a 51-year-old doctor in Leeds",
    "Aiko (27) paints murals in Osaka", "Jonas, engineer, 45, lives in Aarhus and plays chess",
    "Fatima is 62 and runs a bakery in Tunis", "Luca, a 19-year-old student in Turin",
    "Priya, 38, software engineer, Bangalore, runner", "Olaf the 70-year-old fisherman from Bergen",
    "Chen, a 29-year-old violinist in Shanghai", "Ana is a doctor (41) in Quito who cycles",
)  # fmt: skip
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}}, "required": ["zone"],
        "additionalProperties": False}  # fmt: skip
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
                                      "parameters": TIME}},
]  # fmt: skip
PARAMS = {"get_weather": WEATHER, "get_time": TIME}
CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quebec", "Perth", "Dakar", "Hanoi", "Porto")
LONG_SCHEMA = {  # at least 16 x 32 characters: longer than --decode-tokens, so both kinds run as long
    "type": "object",
    "properties": {"notes": {"type": "array", "items": {"type": "string", "minLength": 30, "maxLength": 60},
                             "minItems": 16, "maxItems": 16}},
    "required": ["notes"],
    "additionalProperties": False,
}  # fmt: skip


def json_schema_request(client: openai.OpenAI, model: str, i: int) -> bool:
    person = PEOPLE[i % len(PEOPLE)]
    out = client.chat.completions.create(
        model=model, temperature=0.8, seed=i, max_tokens=200,
        messages=[{"role": "user", "content": f"Extract the person as JSON: {person}"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )  # fmt: skip
    choice = out.choices[0]
    try:
        jsonschema.validate(json.loads(choice.message.content or ""), PERSON)
    except (ValueError, jsonschema.ValidationError):
        _failed("json_schema", choice)
        return False
    return choice.finish_reason == "stop"


FAILURES: list[dict] = []  # a few failed answers, for the report


def _failed(kind: str, choice: object) -> None:
    if len(FAILURES) < 6:
        FAILURES.append({"kind": kind, "answer": str(choice)[:600]})


def tool_request(client: openai.OpenAI, model: str, i: int, choice: object) -> tuple[bool, bool]:
    """(it called, every call is valid)."""
    city = CITIES[i % len(CITIES)]
    question = f"What is the weather in {city} right now?" if i % 2 else f"What time is it in {city}?"
    out = client.chat.completions.create(
        model=model, temperature=0.8, seed=i, max_tokens=200, tools=TOOLS, tool_choice=choice,
        messages=[{"role": "user", "content": question}],
    )  # fmt: skip
    calls = out.choices[0].message.tool_calls or []
    if not calls:
        if choice != "auto":
            _failed("tool", out.choices[0])
        return False, False
    try:
        for call in calls:
            jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    except (KeyError, ValueError, jsonschema.ValidationError):
        _failed("tool", out.choices[0])
        return True, False
    return True, out.choices[0].finish_reason == "tool_calls"


def decode_rate(client: openai.OpenAI, model: str, i: int, masked: bool, tokens: int) -> float:
    extra: dict = {"ignore_eos": True} if not masked else {}
    fmt = {"type": "json_schema", "json_schema": {"name": "notes", "schema": LONG_SCHEMA}} if masked else None
    kwargs = {"response_format": fmt} if fmt else {}
    stream = client.chat.completions.create(
        model=model, temperature=0.8, seed=i, max_tokens=tokens, stream=True,
        stream_options={"include_usage": True}, extra_body=extra,
        messages=[{"role": "user", "content": f"Write eight short notes about {CITIES[i % len(CITIES)]}."}],
        **kwargs,
    )  # fmt: skip
    first = last = None
    count = 0
    for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
            now = time.perf_counter()
            first = now if first is None else first
            last = now
        if chunk.usage is not None:
            count = chunk.usage.completion_tokens
    if first is None or last is None or last <= first or count < 2:
        return float("nan")
    return (count - 1) / (last - first)


def engine_decode(args: argparse.Namespace) -> dict:
    """The bare engine in this process (no HTTP): decode seconds per token at batch 1, masked and not,
    the same number of tokens each (timing only the decode steps, after the prompt's)."""
    sys.path.insert(0, str(REPO / "engine"))
    from cpullm.runtime.engine import Engine
    from cpullm.runtime.sampling import SamplingParams
    from cpullm.runtime.structured import Grammars

    engine = Engine(threads=args.threads)
    grammar = Grammars(engine.tokenizer, engine.config.vocab_size).compile_json_schema(LONG_SCHEMA)
    prompt = engine.tokenizer.encode("Write sixteen short notes about Paris.", add_special=True)
    samples: dict[str, list[float]] = {"masked": [], "unconstrained": []}
    for r in range(args.decode_repeats):
        for kind in ("unconstrained", "masked"):
            constraint = grammar.constraint() if kind == "masked" else None
            params = SamplingParams(max_tokens=args.decode_tokens, temperature=0.8, seed=r,
                                    ignore_eos=constraint is None, constraint=constraint)  # fmt: skip
            engine.add_request(f"{kind}{r}", prompt, params)
            engine.step()  # the prompt and the first token
            t0, steps = time.perf_counter(), 0
            while engine.has_work():
                engine.step()
                steps += 1
            samples[kind].append(steps / (time.perf_counter() - t0))
    masked, plain = statistics.median(samples["masked"]), statistics.median(samples["unconstrained"])
    ratio = round(masked / plain, 3)
    return {"masked_tps": round(masked, 1), "unconstrained_tps": round(plain, 1), "ratio": ratio}


def run(url: str, model: str, args: argparse.Namespace) -> dict:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    result: dict = {"model": model}
    n = args.requests
    with ThreadPoolExecutor(args.concurrency) as pool:
        t0 = time.perf_counter()
        if "json" in args.parts:
            ok = sum(pool.map(lambda i: json_schema_request(client, model, i), range(n)))
            result["json_schema"] = {
                "requests": n,
                "valid": ok,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        if "tools" in args.parts:
            named = [{"type": "function", "function": {"name": t["function"]["name"]}} for t in TOOLS]
            choices = ["required" if i % 2 == 0 else named[(i // 2) % 2] for i in range(n)]
            t0 = time.perf_counter()
            tools = list(pool.map(lambda i: tool_request(client, model, i, choices[i]), range(n)))
            result["tools_forced"] = {"requests": n, "called": sum(c for c, _ in tools),
                                      "valid": sum(v for _, v in tools),
                                      "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            n_auto = max(1, n // 10)
            auto = list(pool.map(lambda i: tool_request(client, model, 1000 + i, "auto"), range(n_auto)))
            result["tools_auto"] = {"requests": n_auto, "called": sum(c for c, _ in auto),
                                    "valid": sum(v for _, v in auto)}  # fmt: skip
    rates: dict = {}
    for batch in args.batch if "decode" in args.parts else []:
        samples: dict[str, list[float]] = {"masked": [], "unconstrained": []}
        with ThreadPoolExecutor(batch) as pool:
            for r in range(args.decode_repeats):
                for kind in ("unconstrained", "masked"):
                    got = pool.map(
                        lambda j, kind=kind, r=r: decode_rate(client, model, r * 100 + j, kind == "masked",
                                                              args.decode_tokens),
                        range(batch),
                    )  # fmt: skip
                    samples[kind].append(statistics.median(got))
        masked, plain = statistics.median(samples["masked"]), statistics.median(samples["unconstrained"])
        rates[str(batch)] = {"masked_tps": round(masked, 1), "unconstrained_tps": round(plain, 1),
                             "ratio": round(masked / plain, 3)}  # fmt: skip
    result["decode_per_stream"] = rates
    result["failures"] = FAILURES
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an already running server (default: start one on the default model)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--decode-repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    parser.add_argument("--parts", type=lambda s: s.split(","), default=["json", "tools", "decode", "engine"])
    parser.add_argument("--threads", type=int, default=None, help="server compute threads")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if args.url:
        model = openai.OpenAI(base_url=args.url + "/v1", api_key="unused").models.list().data[0].id
        result = run(args.url, model, args)
    else:
        with started_server(args.threads, max(16, *args.batch)) as (url, model, _):
            result = run(url, model, args)
    print(json.dumps(result, indent=2), flush=True)
    if "engine" in args.parts:
        result["engine_decode_batch1"] = engine_decode(args)
        print(json.dumps(result["engine_decode_batch1"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
