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
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OPERATION",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_PROVIDER",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOOL_CALL_ID",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
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
# OpenTelemetry GenAI semantic conventions: a CLIENT span `chat {model}` per
# model call and `execute_tool {adapter.action}` per tool call. Prompts and
# answers are never attributes.
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
# Only with --ai-capture-content: what was sent (as it crossed the boundary) and the answer.
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"


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
