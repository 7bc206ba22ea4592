"""The provider registry of `--ai-config FILE` and `--ai-provider NAME=BASE_URL`.

Every problem raises AiConfigError naming the provider and the field, so a
bad configuration stops the server at start instead of failing a run later.
Keys are read here (from an environment variable or a file) and kept only in
memory; they never reach flows, events, logs or spans.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = ["AiConfig", "AiConfigError", "ProviderConfig", "load_ai_config", "parse_provider_flag"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_STRUCTURED = ("json_schema", "json_object_schema", "none")
DEFAULT_MAX_TURNS = 10
MAX_MAX_TURNS = 100


class AiConfigError(ValueError):
    """The AI configuration is unusable; the message names the provider and the field."""


@dataclass(frozen=True)
class ProviderConfig:
    """One OpenAI-compatible endpoint."""

    name: str
    base_url: str
    api_key: str = field(default="", repr=False)
    cloud: bool = False
    default_model: str = ""
    embedding_model: str = ""
    models: tuple[str, ...] = ()  # allow-list; empty allows any model
    structured_output: str = "json_schema"


@dataclass(frozen=True)
class AiConfig:
    """Providers, aliases, prices and limits of this server."""

    providers: dict[str, ProviderConfig]
    default_provider: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> "provider/model" or "model"
    prices: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # USD per 1M tokens
    max_output_tokens: int = 4096
    tool_result_bytes: int = 16_384
    max_turns: int = DEFAULT_MAX_TURNS
    read_timeout: float = 120.0
    local_only: bool = False
    sanitize: tuple[str, ...] = ()  # operator regexes, hidden like built-in secrets
    capture_content: bool = False  # prompts and answers on spans (--ai-capture-content)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: Any, where: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"}:
        raise AiConfigError(f"{where}: provider {name!r}: base_url must be an http(s) URL")
    if not urlsplit(url).hostname:
        raise AiConfigError(f"{where}: provider {name!r}: base_url has no host")
    return url.rstrip("/")


def _provider(name: str, raw: Any, where: str, base: Path) -> ProviderConfig:
    if not _NAME.match(name):
        raise AiConfigError(f"{where}: provider name {name!r} is not 1-64 of [A-Za-z0-9_-]")
    if not isinstance(raw, dict):
        raise AiConfigError(f"{where}: provider {name!r} must be a mapping")
    known = {
        "base_url", "api_key_env", "api_key_file", "locality", "default_model",
        "embedding_model", "models", "structured_output",
    }  # fmt: skip
    for key in raw:
        if key not in known:
            raise AiConfigError(f"{where}: provider {name!r}: unknown field {key!r}")
    url = _check_url(name, raw.get("base_url"), where)
    locality = raw.get("locality") or ("local" if _is_loopback(url) else "cloud")
    if locality not in {"local", "cloud"}:
        raise AiConfigError(f"{where}: provider {name!r}: locality must be local or cloud")
    key = ""
    if env := raw.get("api_key_env"):
        key = os.environ.get(str(env), "")
        if not key:
            raise AiConfigError(
                f"{where}: provider {name!r}: api_key_env names {env!r}, which is not set"
            )
    elif path := raw.get("api_key_file"):
        file = (base / str(path)).expanduser()
        try:
            key = file.read_text().strip()
        except OSError as exc:
            raise AiConfigError(
                f"{where}: provider {name!r}: api_key_file {str(file)!r}: {exc.strerror}"
            ) from None
        if not key:
            raise AiConfigError(f"{where}: provider {name!r}: api_key_file {str(file)!r} is empty")
    if locality == "cloud" and not key:
        raise AiConfigError(
            f"{where}: provider {name!r} is cloud but has no key: set api_key_env or api_key_file"
        )
    structured = raw.get("structured_output", "json_schema")
    if structured not in _STRUCTURED:
        raise AiConfigError(
            f"{where}: provider {name!r}: structured_output must be one of {', '.join(_STRUCTURED)}"
        )
    models = raw.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise AiConfigError(f"{where}: provider {name!r}: models must be a list of names")
    return ProviderConfig(
        name=name,
        base_url=url,
        api_key=key,
        cloud=locality == "cloud",
        default_model=str(raw.get("default_model") or ""),
        embedding_model=str(raw.get("embedding_model") or ""),
        models=tuple(models),
        structured_output=structured,
    )


def _price(key: str, raw: Any, where: str) -> tuple[Decimal, Decimal]:
    if not isinstance(raw, dict) or set(raw) - {"input", "output"}:
        raise AiConfigError(f"{where}: prices[{key!r}] must be {{input: USD, output: USD}}")
    try:
        pin, pout = Decimal(str(raw.get("input", 0))), Decimal(str(raw.get("output", 0)))
    except InvalidOperation:
        raise AiConfigError(f"{where}: prices[{key!r}] must hold numbers") from None
    if pin < 0 or pout < 0 or not (pin.is_finite() and pout.is_finite()):
        raise AiConfigError(f"{where}: prices[{key!r}] must be finite and not negative")
    return pin, pout


def parse_provider_flag(value: str) -> tuple[str, str]:
    """`NAME=BASE_URL[#MODEL]` -> (name, "BASE_URL[#MODEL]"), for `--ai-provider`."""
    name, sep, url = value.partition("=")
    if not sep or not name or not url:
        raise AiConfigError(f"--ai-provider {value!r}: expected NAME=BASE_URL")
    return name, url


def load_ai_config(
    path: Path | None,
    flag_providers: list[str] | tuple[str, ...] = (),
    *,
    max_turns: int = DEFAULT_MAX_TURNS,
    read_timeout: float = 120.0,
    local_only: bool = False,
    capture_content: bool = False,
) -> AiConfig | None:
    """Read `--ai-config` and `--ai-provider` into an AiConfig; None when neither is given.

    A flag provider is `NAME=BASE_URL` with an optional `#MODEL` (its default
    model); a cloud one takes its key from `RUNWIRE_AI_KEY_<NAME>`.
    """
    if not 1 <= max_turns <= MAX_MAX_TURNS:
        raise AiConfigError(
            f"--ai-max-turns must be between 1 and {MAX_MAX_TURNS}, got {max_turns}"
        )
    raw: dict[str, Any] = {}
    where = "--ai-provider"
    base = Path.cwd()
    if path is not None:
        where = str(path)
        base = path.parent
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise AiConfigError(f"--ai-config {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise AiConfigError(f"--ai-config {str(path)!r}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise AiConfigError(f"{where}: must be a mapping with `providers`")
        raw = loaded
    elif not flag_providers:
        return None
    unknown = set(raw) - {
        "providers", "default_provider", "aliases", "prices", "limits", "sanitize",
    }  # fmt: skip
    if unknown:
        raise AiConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    raw_providers = raw.get("providers") or {}
    if not isinstance(raw_providers, dict):
        raise AiConfigError(f"{where}: providers must be a mapping of name -> provider")
    providers = {str(n): _provider(str(n), p, where, base) for n, p in raw_providers.items()}
    for value in flag_providers:
        name, url = parse_provider_flag(value)
        url, _, model = url.partition("#")
        entry: dict[str, Any] = {"base_url": url, "default_model": model}
        if not _is_loopback(url):
            entry["api_key_env"] = f"RUNWIRE_AI_KEY_{name.upper().replace('-', '_')}"
        providers[name] = _provider(name, entry, "--ai-provider", base)
    if not providers:
        raise AiConfigError(f"{where}: providers: at least one provider is needed")
    default = str(
        raw.get("default_provider") or (next(iter(providers)) if len(providers) == 1 else "")
    )
    if default and default not in providers:
        raise AiConfigError(f"{where}: default_provider {default!r} is not a configured provider")
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in aliases.items()
    ):
        raise AiConfigError(f"{where}: aliases must map names to `provider/model` or `model`")
    for alias, target in aliases.items():
        prov = target.split("/", 1)[0] if "/" in target else ""
        if prov and prov not in providers:
            raise AiConfigError(f"{where}: aliases[{alias!r}] names unknown provider {prov!r}")
    prices_raw = raw.get("prices") or {}
    if not isinstance(prices_raw, dict):
        raise AiConfigError(f"{where}: prices must map `provider/model` to {{input, output}}")
    prices = {str(k): _price(str(k), v, where) for k, v in prices_raw.items()}
    limits = raw.get("limits") or {}
    if not isinstance(limits, dict):
        raise AiConfigError(f"{where}: limits must be a mapping")
    out_tokens = limits.get("max_output_tokens", 4096)
    result_bytes = limits.get("tool_result_bytes", 16_384)
    for key, value in (("max_output_tokens", out_tokens), ("tool_result_bytes", result_bytes)):
        if not isinstance(value, int) or value <= 0:
            raise AiConfigError(f"{where}: limits.{key} must be a positive integer")
    sanitize = raw.get("sanitize") or []
    if not isinstance(sanitize, list) or not all(isinstance(p, str) and p for p in sanitize):
        raise AiConfigError(f"{where}: sanitize must be a list of regular expressions")
    for i, pattern in enumerate(sanitize):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise AiConfigError(
                f"{where}: sanitize[{i}] is not a regular expression: {exc}"
            ) from None
    return AiConfig(
        sanitize=tuple(sanitize),
        capture_content=capture_content,
        providers=providers,
        default_provider=default,
        aliases=dict(aliases),
        prices=prices,
        max_output_tokens=out_tokens,
        tool_result_bytes=result_bytes,
        max_turns=max_turns,
        read_timeout=read_timeout,
        local_only=local_only,
    )
