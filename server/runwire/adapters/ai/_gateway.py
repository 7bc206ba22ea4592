"""OpenAiGateway: the engine's ModelGateway over the OpenAI Chat Completions protocol.

The official `openai` SDK does the HTTP, SSE framing, retries (honouring
`Retry-After`) and timeouts; it is imported on the first call, never at
server or CLI start. Deltas are folded by runwire's own StreamAccumulator,
because real servers deviate from what the SDK's helpers expect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from runwire.adapters.ai._config import AiConfig, ProviderConfig
from runwire.adapters.ai._stream import StreamAccumulator
from runwire.engine import (
    JournalFailed,
    LeaseLost,
    ModelCallFailed,
    ModelEmbedding,
    ModelRoute,
    ModelTurn,
)

__all__ = ["OpenAiGateway"]

log = logging.getLogger(__name__)


class OpenAiGateway:
    """Routes AI nodes to configured providers and streams chat completions from them."""

    def __init__(self, config: AiConfig, *, max_retries: int = 2) -> None:
        self.config = config
        self.max_turns = config.max_turns
        self.sanitize_patterns = config.sanitize
        self.capture_content = config.capture_content
        self.tool_result_bytes = config.tool_result_bytes
        self._max_retries = max_retries
        self._clients: dict[str, Any] = {}

    # -- routing ----------------------------------------------------------------

    def _provider_name(self, provider: str) -> str:
        return provider or self.config.default_provider

    def _resolve(self, provider: str, model: str, embedding: bool = False) -> tuple[str, str, str]:
        """(provider, model, reason) after aliases and defaults."""
        name = self._provider_name(provider)
        target = self.config.aliases.get(model)
        if target is not None:
            prov, _, served = target.rpartition("/")
            if prov and provider and prov != provider:
                return name, served, f"alias {model} -> {target} (provider {name} asked)"
            return prov or name, served, f"alias {model} -> {target}"
        if not model:
            p = self.config.providers.get(name)
            if embedding:
                served = p.embedding_model if p else ""
                return name, served, f"embedding model of provider {name}"
            served = p.default_model if p else ""
            return name, served, f"default model of provider {name}"
        return name, model, "model named by the node"

    def problems(
        self, provider: str, model: str, *, embedding: bool = False
    ) -> list[tuple[str, str]]:
        """(field, message) pairs for a node naming this provider and model."""
        name = self._provider_name(provider)
        if not name:
            known = ", ".join(sorted(self.config.providers))
            return [("provider", f"name a provider (no default_provider); configured: {known}")]
        resolved, served, _ = self._resolve(provider, model, embedding)
        p = self.config.providers.get(resolved)
        if p is None:
            known = ", ".join(sorted(self.config.providers))
            return [("provider", f"unknown provider {resolved!r}; configured: {known}")]
        if p.cloud and self.config.local_only:
            return [("provider", f"provider {resolved!r} is cloud and this server is local-only")]
        if not served:
            field = "embedding_model" if embedding else "default_model"
            return [("model", f"name a model: provider {resolved!r} has no {field}")]
        if p.models and served not in p.models:
            return [
                (
                    "model",
                    f"model {served!r} is not allowed at provider {resolved!r}; "
                    f"allowed: {', '.join(p.models)}",
                )
            ]
        return []

    def route(self, provider: str, model: str, *, embedding: bool = False) -> ModelRoute:
        """Resolve a node's provider and model."""
        name, served, reason = self._resolve(provider, model, embedding)
        p = self.config.providers[name]
        return ModelRoute(name, served, model, reason, p.cloud)

    def cost_micros(self, route: ModelRoute, input_tokens: int, output_tokens: int) -> int:
        """Tokens times USD per million tokens is micro-dollars: exact in Decimal."""
        price = self.config.prices.get(f"{route.provider}/{route.model}")
        if price is None:
            return 0
        micros = price[0] * input_tokens + price[1] * output_tokens
        return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    # -- calls ------------------------------------------------------------------

    def _client(self, p: ProviderConfig) -> Any:
        client = self._clients.get(p.name)
        if client is None:
            import openai  # lazy: seconds of import time, only once a model is called

            client = openai.AsyncOpenAI(
                base_url=p.base_url,
                # Local servers take any key; the SDK insists on one.
                api_key=p.api_key or "unused",
                max_retries=self._max_retries,
                timeout=openai.Timeout(self.config.read_timeout, connect=10.0),
            )
            self._clients[p.name] = client
        return client

    async def chat(
        self,
        route: ModelRoute,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        on_delta: Callable[[str], Awaitable[None]],
        *,
        schema: dict[str, Any] | None = None,
    ) -> ModelTurn:
        """One streamed chat completion; raises ModelCallFailed."""
        import openai

        p = self.config.providers[route.provider]
        who = f"provider {route.provider} model {route.model}"
        acc = StreamAccumulator()
        kwargs: dict[str, Any] = {
            "model": route.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.config.max_output_tokens,
        }
        if tools:
            kwargs["tools"] = tools
        if schema is not None and p.structured_output == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "contract", "schema": schema},
            }
        elif schema is not None and p.structured_output == "json_object_schema":
            # llama.cpp's server refuses json_schema but honours json_object with a schema.
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        try:
            stream = await self._client(p).chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            raise _status_failure(exc, who) from None
        except openai.APITimeoutError:
            raise ModelCallFailed(
                "AI_PROVIDER_ERROR", f"{who}: no answer within {self.config.read_timeout:g}s"
            ) from None
        except openai.APIError as exc:
            raise ModelCallFailed(
                "AI_PROVIDER_ERROR", f"{who}: cannot reach the provider: {exc.message}"
            ) from None
        try:
            async for chunk in stream:
                delta = acc.add(chunk.model_dump(exclude_none=True))
                if delta:
                    await on_delta(delta)
        except (asyncio.CancelledError, LeaseLost, JournalFailed):
            raise
        except Exception as exc:
            # A cut connection, a chunk that is not JSON, a read timeout: whatever
            # the transport raises mid-stream, the answer is incomplete.
            raise ModelCallFailed(
                "AI_STREAM_BROKEN",
                f"{who}: the stream broke: {type(exc).__name__}: {exc}"[:400],
                input_tokens=acc.input_tokens,
                output_tokens=acc.output_tokens,
            ) from None
        finally:
            # Closes the HTTP response: on cancel the server sees the connection go.
            await stream.close()
        if not acc.finished:
            raise ModelCallFailed(
                "AI_STREAM_BROKEN",
                f"{who}: the stream ended before a finish_reason",
                input_tokens=acc.input_tokens,
                output_tokens=acc.output_tokens,
            )
        return ModelTurn(
            text=acc.text,
            finish_reason=acc.finish_reason,
            input_tokens=acc.input_tokens,
            output_tokens=acc.output_tokens,
            model=acc.model or route.model,
            tool_calls=acc.tool_calls(),
        )

    async def embed(self, route: ModelRoute, text: str) -> ModelEmbedding:
        """One embeddings call; raises ModelCallFailed."""
        import openai

        p = self.config.providers[route.provider]
        who = f"provider {route.provider} model {route.model}"
        try:
            response = await self._client(p).embeddings.create(model=route.model, input=text)
        except openai.APIStatusError as exc:
            raise _status_failure(exc, who) from None
        except openai.APIError as exc:
            raise ModelCallFailed(
                "AI_PROVIDER_ERROR", f"{who}: cannot reach the provider: {exc.message}"
            ) from None
        if not response.data:
            raise ModelCallFailed("AI_PROVIDER_ERROR", f"{who}: the answer held no embedding")
        usage = response.usage
        return ModelEmbedding(
            vector=[float(v) for v in response.data[0].embedding],
            input_tokens=int(usage.prompt_tokens) if usage else 0,
            model=response.model or route.model,
        )


def _status_failure(exc: Any, who: str) -> ModelCallFailed:
    status = int(getattr(exc, "status_code", 0) or 0)
    if status in (401, 403):
        return ModelCallFailed("AI_AUTH", f"{who}: the provider refused the key (HTTP {status})")
    if status == 429:
        return ModelCallFailed("AI_RATE_LIMITED", f"{who}: rate limited (HTTP 429) after retries")
    if 400 <= status < 500:
        detail = str(getattr(exc, "message", "") or "")[:300]
        return ModelCallFailed(
            "AI_BAD_REQUEST", f"{who}: request refused (HTTP {status}): {detail}"
        )
    return ModelCallFailed("AI_PROVIDER_ERROR", f"{who}: provider error (HTTP {status})")
