"""One webhook POST: egress-checked, signed, with a timeout, redirects not followed.

The target's host is resolved once per attempt and every address is checked
by the http adapter's egress rules (`admitted_addresses`, with the server's
`--webhook-allow` list); the connection goes to a checked address with the
original name in the Host header and TLS SNI. A redirect is a failure: a
receiver that moved must be updated by its owner, not followed blindly.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from runwire.adapters.http import (
    EgressPolicy,
    EgressRefused,
    admitted_addresses,
    parse_http_url,
)
from runwire.webhooks._signing import sign

__all__ = ["MAX_RETRY_AFTER", "Outcome", "Sender", "target_problem"]

# A Retry-After longer than this is cut to it: a receiver cannot park a
# subscription for days with one header.
MAX_RETRY_AFTER = 3600.0
_ERROR_BODY = 200  # characters of a failing response's body kept in last_error


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `ok` on a 2xx; else why, and a Retry-After if the receiver sent one."""

    ok: bool
    error: str = ""
    retry_after: float | None = None


def target_problem(url: str, policy: EgressPolicy) -> str | None:
    """Why `url` cannot be a webhook target (syntax and scheme; not its addresses), or None.

    `https` always; `http` only to a host the allow-list names (a test receiver
    on loopback, a sidecar), because a signature does not hide the events.
    """
    if len(url) > 2048:
        return "must be at most 2048 characters"
    parsed = parse_http_url(url, schemes="use https")
    if isinstance(parsed, str):
        return parsed
    if parsed.userinfo:
        return "must not carry credentials; receivers check the signature instead"
    if parsed.fragment:
        return "must not have a fragment"
    if parsed.scheme == "http" and not policy.permits(parsed.host):
        return "must use https (http only to a host on --webhook-allow)"
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


class Sender:
    """POSTs to one subscription's target over a kept-alive client."""

    def __init__(
        self,
        url: str,
        key: bytes,
        policy: EgressPolicy,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext,
    ) -> None:
        self.url = httpx.URL(url)
        self.key = key
        self.policy = policy
        self.timeout = timeout
        # Connections are pooled per checked address of this one host name:
        # every request carries the same name, so certificates are checked alike.
        self._client = httpx.AsyncClient(
            verify=ssl_context,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
        )

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def post(self, webhook_id: str, body: bytes) -> Outcome:
        """One signed attempt of a batch, within the timeout as a whole; never raises
        for network trouble."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(webhook_id, body)
        except TimeoutError:
            return Outcome(False, f"no response within {self.timeout:g}s")

    async def _post(self, webhook_id: str, body: bytes) -> Outcome:
        url = self.url
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await admitted_addresses(self.policy, host, port, flag="--webhook-allow")
        except EgressRefused as exc:
            return Outcome(False, f"refused by the egress rules: {exc}")
        except OSError as exc:
            return Outcome(False, f"cannot resolve {host!r}: {exc}")
        timestamp = int(time.time())
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": "runwire-webhooks",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.key, webhook_id, timestamp, body),
        }
        literal = _is_literal(host)
        extensions = {"sni_hostname": host} if url.scheme == "https" and not literal else {}
        last: Exception | None = None
        for ip in addresses:
            request = self._client.build_request(
                "POST", url.copy_with(host=str(ip)), headers=headers, content=body,
                extensions=extensions,
            )  # fmt: skip
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last = exc
                continue
            except httpx.TimeoutException:
                return Outcome(False, f"no response within {self.timeout:g}s")
            except httpx.HTTPError as exc:
                return Outcome(False, f"{type(exc).__name__}: {exc}"[:500])
            try:
                return await _outcome(response)
            except httpx.HTTPError as exc:
                return Outcome(False, f"{type(exc).__name__}: {exc}"[:500])
            finally:
                await response.aclose()
        return Outcome(False, f"cannot connect to {host}:{port}: {last}"[:500])


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _outcome(response: httpx.Response) -> Outcome:
    """The attempt's outcome; reads at most a few KiB of the response body."""
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept.extend(chunk)
        if len(kept) >= 4 * _ERROR_BODY:
            break
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True)
    text = bytes(kept).decode("utf-8", errors="replace")[:_ERROR_BODY]
    text = " ".join(text.split())
    error = f"HTTP {status} {response.reason_phrase}".rstrip()
    if 300 <= status < 400:
        error += f" (redirect to {response.headers.get('location', '?')!r} not followed)"
    elif text:
        error += f": {text}"
    return Outcome(False, error, _retry_after(response.headers.get("retry-after")))
