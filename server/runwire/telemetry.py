"""Span names, attribute keys and tracer set-up, in one place."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_ERROR_REASON",
    "ATTR_FLOW_NAME",
    "ATTR_ITEM_INDEX",
    "ATTR_ITERATION",
    "ATTR_NODE_ID",
    "ATTR_RUN_ID",
    "SPAN_NODE_PREFIX",
    "SPAN_RUN_PREFIX",
    "TRACER_NAME",
    "make_tracer_provider",
]

TRACER_NAME = "runwire"
SPAN_RUN_PREFIX = "RunFlow:"
SPAN_NODE_PREFIX = "ExecuteNode:"
ATTR_RUN_ID = "runwire.run_id"
ATTR_NODE_ID = "runwire.node_id"
ATTR_ATTEMPT = "runwire.attempt"
ATTR_ITERATION = "runwire.iteration"
ATTR_ITEM_INDEX = "runwire.item_index"  # only on the spans of a fan-out item's attempts
ATTR_FLOW_NAME = "runwire.flow_name"
ATTR_ERROR_REASON = "runwire.error_reason"


def make_tracer_provider() -> TracerProvider:
    """A provider configured by the standard OTEL_* variables.

    Spans are always recorded, so every event carries real trace and span ids;
    they are exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT (or
    the traces-specific variable) is set.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "runwire")})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def tracer(provider: TracerProvider | None = None) -> trace.Tracer:
    """The runwire tracer from `provider` (or the global one)."""
    if provider is None:
        return trace.get_tracer(TRACER_NAME)
    return provider.get_tracer(TRACER_NAME)
