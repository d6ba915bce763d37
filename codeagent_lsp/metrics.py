"""Prometheus metrics, served on a separate port bound to 127.0.0.1 when the administrator asks
for it (`--metrics-port`). Labels carry method names, outcomes and reasons only: never a
document, a path or a token name, and never anything a client can choose freely (unknown methods
are counted as "other", so a client cannot grow the label set)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

if TYPE_CHECKING:
    from codeagent_lsp.engine.backend import RequestRecord

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "codeagent_requests",
    "LSP requests by method and outcome (ok, cancelled, busy, rate_limited, unauthorized)",
    ["method", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "codeagent_request_seconds",
    "Time from a request's arrival to its answer",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DENIALS = Counter(
    "codeagent_denials",
    "Messages refused, by reason (malformed, invalid_params, busy, rate_limited, unauthorized)",
    ["reason"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "codeagent_model_tokens",
    "Model tokens by kind: evaluated (prompt tokens computed), "
    "reused (prompt tokens served from the KV cache), generated",
    ["kind"],
    registry=REGISTRY,
)
CONNECTIONS = Counter(
    "codeagent_connections",
    "Network connections by outcome (accepted, unauthorized)",
    ["outcome"],
    registry=REGISTRY,
)


def count_generation(record: RequestRecord) -> None:
    """Called by the engines (embedded and remote) for each finished request."""
    TOKENS.labels("evaluated").inc(record.evaluated_tokens)
    TOKENS.labels("reused").inc(record.reused_tokens)
    TOKENS.labels("generated").inc(record.generated_tokens)


def serve(port: int) -> None:
    """Expose /metrics on 127.0.0.1:port (a daemon thread); local only, scraped by an agent."""
    start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
