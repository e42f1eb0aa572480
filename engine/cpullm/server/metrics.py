"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Names follow vLLM's where they mean the same, with the ``cpullm_`` prefix:

- ``cpullm_requests_total{route, status}``: HTTP answers of the API routes
- ``cpullm_request_finished_total{finish_reason}``: stop, length, abort
- ``cpullm_prompt_tokens_total``, ``cpullm_generation_tokens_total``
- ``cpullm_num_requests_running``, ``cpullm_num_requests_waiting``
- ``cpullm_kv_cache_usage_ratio``, ``cpullm_kv_cache_blocks_used``, ``cpullm_kv_cache_blocks_total``
- ``cpullm_prefix_cache_hit_tokens``: prompt tokens served from cached blocks so far
- ``cpullm_time_to_first_token_seconds``, ``cpullm_inter_token_latency_seconds`` (histograms),
  ``cpullm_e2e_request_latency_seconds``
- ``cpullm_step_batch_size``, ``cpullm_step_queue_depth`` (histograms, one sample per engine step):
  sequences running, and requests left waiting, after each step (is the batch full, is a queue building)
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300)
_COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
disable_created_metrics()  # the *_created series only double the scrape size


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cpullm_requests", "HTTP answers of the API routes", ["route", "status"], registry=r
        )
        self.request_finished = Counter(
            "cpullm_request_finished",
            "Generation requests finished, by reason",
            ["finish_reason"],
            registry=r,
        )
        self.prompt_tokens = Counter("cpullm_prompt_tokens", "Prompt tokens accepted", registry=r)
        self.generation_tokens = Counter("cpullm_generation_tokens", "Tokens generated", registry=r)
        self.running = Gauge("cpullm_num_requests_running", "Sequences in the running batch", registry=r)
        self.waiting = Gauge("cpullm_num_requests_waiting", "Sequences waiting to be scheduled", registry=r)
        self.kv_usage = Gauge("cpullm_kv_cache_usage_ratio", "Fraction of KV cache blocks in use", registry=r)
        self.kv_used = Gauge("cpullm_kv_cache_blocks_used", "KV cache blocks in use", registry=r)
        self.kv_total = Gauge("cpullm_kv_cache_blocks_total", "KV cache blocks in the cache", registry=r)
        self.prefix_hits = Gauge(
            "cpullm_prefix_cache_hit_tokens", "Prompt tokens served from cached blocks so far", registry=r
        )
        self.ttft = Histogram(
            "cpullm_time_to_first_token_seconds",
            "Time from request arrival to its first token",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "cpullm_inter_token_latency_seconds",
            "Time between consecutive tokens of one request",
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "cpullm_e2e_request_latency_seconds",
            "Time from request arrival to its last token",
            buckets=_E2E_BUCKETS,
            registry=r,
        )

        self.step_batch = Histogram(
            "cpullm_step_batch_size",
            "Sequences running after each engine step",
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.step_queue = Histogram(
            "cpullm_step_queue_depth",
            "Requests waiting after each engine step",
            buckets=_COUNT_BUCKETS,
            registry=r,
        )

    def observe_step(self, stats: Mapping[str, float]) -> None:
        self.step_batch.observe(stats["running"])
        self.step_queue.observe(stats["waiting"])

    def finished(self, reason: str) -> None:
        self.request_finished.labels(finish_reason=reason).inc()

    def publish(self, stats: Mapping[str, float]) -> None:
        self.running.set(stats["running"])
        self.waiting.set(stats["waiting"])
        self.kv_usage.set(stats["kv_usage"])
        self.kv_used.set(stats["kv_blocks_used"])
        self.kv_total.set(stats["kv_blocks_total"])
        self.prefix_hits.set(stats["prefix_cache_hit_tokens"])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
