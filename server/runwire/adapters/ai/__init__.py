"""AI providers over the OpenAI Chat Completions protocol: configuration, stream accumulation, the gateway.

Kept out of `runwire.adapters` (whose `__init__` never imports it) and out of
the engine, which reaches it only through `runwire.engine.ModelGateway`: the
`openai` SDK costs seconds to import and is loaded on the first model call.
"""

from runwire.adapters.ai._config import (
    AiConfig,
    AiConfigError,
    ProviderConfig,
    load_ai_config,
    parse_provider_flag,
)
from runwire.adapters.ai._gateway import OpenAiGateway
from runwire.adapters.ai._stream import StreamAccumulator

__all__ = [
    "AiConfig",
    "AiConfigError",
    "OpenAiGateway",
    "ProviderConfig",
    "StreamAccumulator",
    "load_ai_config",
    "parse_provider_flag",
]
