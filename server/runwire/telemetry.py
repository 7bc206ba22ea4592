"""Span names, attribute keys and tracer set-up, in one place."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util import types

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
    "EndRecordedSpan",
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


class EndRecordedSpan:
    """A span made when it ends, with the time it started: for a long stream.

    A live SDK span holds locks, bounded lists and its attributes for as long
    as it is open; a WatchRun stream on a run held at a gate may stay open for
    days, thousands of them at once. This holds only the parent context, the
    attributes and the start time, and hands the span to the provider at
    `end` (so span processors see its start only then). Nothing may be added
    to it meanwhile, and it is never the current span.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_start", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        *,
        parent: otel_context.Context,
        kind: trace.SpanKind,
        attributes: Mapping[str, types.AttributeValue],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._start = time.time_ns()

    def end(self) -> None:
        """Record the span, from its start until now."""
        self._tracer.start_span(
            self._name,
            context=self._parent,
            kind=self._kind,
            attributes=self._attributes,
            start_time=self._start,
        ).end()
