"""The http adapter: one HTTP request through httpx, with egress protection on by default."""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import math
import re
import socket
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import rfc8785

from runwire.adapters._base import ActionFailed, ActionSpec, NodeContext, SandboxRefused
from runwire.adapters._base import is_templated as _templated
from runwire.v1 import events_pb2

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "EgressPolicy",
    "EgressRefused",
    "HttpAdapter",
    "admitted_addresses",
    "parse_http_url",
    "resolve_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BYTES = 1 << 20
"""Default cap on a request body (refused above it) and a response body (truncated)."""
DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take, redirects included, when the node does not say."""
MAX_REDIRECTS = 5
"""Redirects followed before the node fails with HTTP_REDIRECTS."""

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers that frame the message or pick the virtual host are the client's to
# set; letting a flow set them invites request smuggling and routing tricks.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Dropped when a redirect leaves the origin, as browsers and httpx do.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Instance metadata services. Most sit in ranges refused anyway; Azure's
# wireserver is a public address, so it is named here.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    for candidate in (ip, _embedded_ipv4(ip)):
        if candidate is None:
            continue
        if candidate in _METADATA:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_unspecified:
            return "an unspecified address"
        if candidate.is_private:
            return "a private address"
        if not candidate.is_global:
            return "a non-public address"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations requests may reach.

    Public addresses are allowed. Loopback, private, link-local, multicast,
    unspecified, reserved and cloud metadata addresses are refused unless the
    host name (exactly, or by a `*.suffix` pattern) or a network containing
    the address is on the allow-list.
    """

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: tuple[str, ...]) -> EgressPolicy:
        """Build a policy from `--http-allow` entries: host names, `*.suffix`, IPs or CIDRs.

        Raises:
            ValueError: An entry is neither a host name nor an address or network.
        """
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in allow:
            text = entry.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = text.removeprefix("*.")
            if not name or not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", name):
                raise ValueError(
                    f"--http-allow {entry!r} is not a host name, *.suffix, IP address or CIDR"
                )
            if text.startswith("*."):
                suffixes.append("." + name)
            else:
                hosts.add(name)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def permits(self, host: str, ip: IPAddress | None = None) -> bool:
        """Whether the allow-list names `host` (exactly or by a `*.suffix`) or covers `ip`
        (by default `host` itself, when it is an IP address)."""
        name = host.lower().rstrip(".")
        if name in self.hosts or name.endswith(self.suffixes):
            return True
        ip = ip if ip is not None else _literal(name)
        if ip is None:
            return False
        mapped = _embedded_ipv4(ip)
        return any(ip in net or (mapped is not None and mapped in net) for net in self.networks)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why a connection to `ip` (found for `host`) is refused, or None if it may go."""
        return None if self.permits(host, ip) else _forbidden(ip)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in resolver order, without duplicates.

    Raises:
        OSError: The name does not resolve.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    return list(seen)


class EgressRefused(Exception):
    """The egress policy refuses a destination; the message says which address and why."""


async def admitted_addresses(
    policy: EgressPolicy, host: str, port: int, *, flag: str = "--http-allow"
) -> list[IPAddress]:
    """Resolve `host` once and check every address against `policy`; the addresses to
    connect to (connect to these, never resolve again: DNS rebinding).

    Shared by the http adapter and webhook delivery; `flag` names the allow-list
    that would permit a refused address.

    Raises:
        OSError: The name does not resolve, or resolves to no address.
        EgressRefused: An address is refused.
    """
    addresses = await resolve_host(host, port)
    if not addresses:
        raise OSError(f"{host!r} resolves to no address")
    literal = _literal(host) is not None
    for ip in addresses:
        if why := policy.refusal(host, ip):
            said = f"{ip} is {why}" if literal else f"{host} resolves to {ip}, {why}"
            raise EgressRefused(f"{said}; add the host or a CIDR to {flag} to permit it")
    return addresses


def _characters_problem(url: str) -> str | None:
    if any(unicodedata.category(c) in ("Cc", "Zs", "Zl", "Zp") for c in url):
        return "must not contain whitespace or control characters"
    return None


def parse_http_url(url: str, *, schemes: str = "use http or https") -> httpx.URL | str:
    """`url` parsed, or why it cannot be requested: whitespace or control characters,
    bad syntax, a scheme other than http and https (`schemes` says what to use
    instead), no host. Shared by the http adapter and webhook targets."""
    if why := _characters_problem(url):
        return why
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"scheme {parsed.scheme!r} is not allowed; {schemes}"
    if not parsed.host:
        return "must name a host"
    return parsed


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be requested, checked as far as templates allow."""
    if not _templated(url):
        parsed = parse_http_url(url)
        return parsed if isinstance(parsed, str) else None
    if why := _characters_problem(url):
        return why
    scheme, sep, _ = url.partition("://")
    if sep and not _templated(scheme) and scheme.lower() not in ("http", "https"):
        return f"scheme {scheme!r} is not allowed; use http or https"
    return None


def _header_problems(headers: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not _TOKEN.match(name):
            problems.append(("headers", f"header name {name!r} is not an HTTP token"))
        elif name.lower() in _RESERVED_HEADERS:
            problems.append((f"headers.{name}", f"header {name!r} is set by the client"))
        elif isinstance(value, str) and any(
            unicodedata.category(c) == "Cc" and c != "\t" for c in value
        ):
            problems.append(
                (f"headers.{name}", "must not contain CR, LF, NUL or control characters")
            )
    return problems


def _redact(url: httpx.URL) -> str:
    """The URL without credentials, for events and messages."""
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


def _json_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _json_int(text: str) -> int:
    # Canonical JSON (RFC 8785) carries numbers as IEEE doubles.
    value = int(text)
    if abs(value) > 2**53 - 1:
        raise ValueError(text)
    return value


def _json_constant(text: str) -> Any:
    raise ValueError(text)


def _parse_json(text: str) -> Any:
    """The JSON value in `text`, or `text` itself when it is not JSON canonical form can carry."""
    try:
        return json.loads(
            text, parse_float=_json_number, parse_int=_json_int, parse_constant=_json_constant
        )
    except ValueError:
        return text


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HttpAdapter:
    """`request` sends one HTTP request and outputs the response.

    Output: `{status, url, headers, body, size, truncated}`. `body` is the
    parsed JSON value when the response says it is JSON and parses, else the
    text (invalid UTF-8 replaced by U+FFFD, NUL by U+2400). A body over the
    size cap is truncated to it and `truncated` is true: a large page is still
    useful, and the flag tells the next node it has only the start. A status
    outside 2xx fails the node with reason `HTTP_STATUS` and the response as
    output, unless listed in `accept_status`.

    Egress: each hop's host is resolved once, every address is checked against
    the `EgressPolicy`, and the connection goes to a checked address with the
    original name in the Host header and TLS SNI (certificates are verified
    against the name). A second lookup, which DNS rebinding would poison, never
    happens. Redirects are followed by hand, re-checked the same way.
    """

    name = "http"
    actions: Mapping[str, ActionSpec] = {
        "request": ActionSpec(
            "request",
            "Send an HTTP request; output {status, url, headers, body, size, truncated}",
            {
                "type": "object",
                "properties": {
                    "method": {"description": "HTTP method.", "enum": _METHODS, "default": "GET"},
                    "url": {
                        "description": "http or https URL; its host must pass the egress"
                        " policy (public, or on --http-allow).",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 8192,
                    },
                    "headers": {
                        "description": "Request headers.",
                        "type": "object",
                        "additionalProperties": {"type": "string", "maxLength": 8192},
                        "maxProperties": 100,
                    },
                    "body": {
                        "description": "Request body as text; not with `json`.",
                        "type": "string",
                    },
                    "json": {
                        "description": "Any JSON value sent as the body with"
                        " `content-type: application/json`; not with `body`."
                    },
                    "timeout": {
                        "description": "Seconds for the whole request; the node timeout"
                        " still applies.",
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 3600,
                        "default": DEFAULT_TIMEOUT,
                    },
                    "accept_status": {
                        "description": "Statuses outside 2xx that still succeed.",
                        "type": "array",
                        "items": {"type": "integer", "minimum": 100, "maximum": 599},
                        "maxItems": 500,
                    },
                    "follow_redirects": {
                        "description": "Follow redirects, each hop re-checked by the egress"
                        " policy.",
                        "type": "boolean",
                        "default": True,
                    },
                },
                "required": ["url"],
                "additionalProperties": False,
            },
        )
    }

    def __init__(self, allow: tuple[str, ...] = (), *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Configure the adapter.

        Args:
            allow: `--http-allow` entries that may be reached despite being non-public.
            max_bytes: Request bodies above this are refused; responses are truncated to it.

        Raises:
            ValueError: An allow-list entry is malformed.
        """
        self.policy = EgressPolicy.parse(allow)
        self.max_bytes = max_bytes
        self._ssl: ssl.SSLContext | None = None

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """URL scheme and syntax, header names and values, body size."""
        problems: list[tuple[str, str]] = []
        url = params.get("url")
        if isinstance(url, str) and (why := _url_problem(url)):
            problems.append(("url", why))
        headers = params.get("headers")
        if isinstance(headers, Mapping):
            problems.extend(_header_problems(headers))
        if "body" in params and "json" in params:
            problems.append(("json", "set body or json, not both"))
        for key in ("body", "json"):
            if key not in params:
                continue
            value = params[key]
            if isinstance(value, str) and _templated(value):
                continue
            try:
                size = len(_encode_body(key, value))
            except ValueError as exc:
                problems.append((key, str(exc)))
                continue
            if size > self.max_bytes:
                problems.append(
                    (
                        key,
                        f"is {size} bytes, over this server's {self.max_bytes}-byte request limit",
                    )
                )
        return problems

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """A DELETE request destroys: `HTTP DELETE <url>`."""
        if str(params.get("method", "GET")).upper() != "DELETE":
            return None
        try:
            url = _redact(httpx.URL(str(params.get("url", ""))))
        except httpx.InvalidURL:
            url = str(params.get("url", ""))
        return f"HTTP DELETE {url[:300]}"

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Send the request, following redirects within the egress policy."""
        raw_url = str(params["url"])
        if why := _url_problem(raw_url):
            raise SandboxRefused(events_pb2.SANDBOX_VIOLATION_KIND_NETWORK, raw_url, f"url {why}")
        url = httpx.URL(raw_url)
        method = str(params.get("method", "GET")).upper()
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        if problems := _header_problems(headers):
            field, why = problems[0]
            raise ActionFailed("PARAMS_INVALID", f"{field}: {why}")
        content: bytes | None = None
        for key in ("body", "json"):
            if key in params:
                try:
                    content = _encode_body(key, params[key])
                except ValueError as exc:
                    raise ActionFailed("PARAMS_INVALID", f"{key}: {exc}") from None
                if key == "json" and not any(h.lower() == "content-type" for h in headers):
                    headers["Content-Type"] = "application/json"
        if content is not None and len(content) > self.max_bytes:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_LIMIT,
                _redact(url),
                f"request body is {len(content)} bytes, over this server's "
                f"{self.max_bytes}-byte request limit",
            )
        timeout = float(params.get("timeout", DEFAULT_TIMEOUT))
        exchange = _Exchange(
            self,
            method,
            headers,
            content,
            accept={int(s) for s in params.get("accept_status") or ()},
            follow=bool(params.get("follow_redirects", True)),
            io_timeout=timeout,
        )
        try:
            async with asyncio.timeout(timeout):
                return await exchange.run(url)
        except TimeoutError:
            raise ActionFailed(
                "HTTP_TIMEOUT", f"{method} {_redact(url)}: no response within {timeout:g}s"
            ) from None

    def ssl_context(self) -> ssl.SSLContext:
        """The verifying TLS context, built once (it honours SSL_CERT_FILE / SSL_CERT_DIR)."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def _encode_body(key: str, value: Any) -> bytes:
    if key == "json":
        # Params arrive through protobuf Struct, where every number is a double;
        # canonical JSON writes 1.0 as 1, which is what an API expecting an int wants.
        try:
            body: bytes = rfc8785.dumps(value)
        except rfc8785.CanonicalizationError:
            raise ValueError("must hold only finite numbers") from None
        return body
    return str(value).encode("utf-8")


class _Exchange:
    """One request and its redirects."""

    def __init__(
        self,
        adapter: HttpAdapter,
        method: str,
        headers: dict[str, str],
        content: bytes | None,
        *,
        accept: set[int],
        follow: bool,
        io_timeout: float,
    ) -> None:
        self.adapter = adapter
        self.io_timeout = io_timeout
        self.method = method
        self.headers = headers
        self.content = content
        self.accept = accept
        self.follow = follow

    async def run(self, url: httpx.URL) -> dict[str, Any]:
        # No keep-alive: a pooled connection is keyed by IP, and reusing one
        # made for another name would skip that name's certificate check.
        async with httpx.AsyncClient(
            verify=self.adapter.ssl_context(),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(self.io_timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                response = await self._send(client, url)
                try:
                    location = response.headers.get("location")
                    if (
                        not self.follow
                        or response.status_code not in _REDIRECT_STATUSES
                        or not location
                    ):
                        return await self._output(url, response)
                    url = self._redirect(url, response.status_code, location)
                finally:
                    await response.aclose()
        raise ActionFailed(
            "HTTP_REDIRECTS", f"more than {MAX_REDIRECTS} redirects, last to {_redact(url)}"
        )

    def _redirect(self, url: httpx.URL, status: int, location: str) -> httpx.URL:
        try:
            target = url.join(location)
        except httpx.InvalidURL as exc:
            raise ActionFailed("HTTP_REDIRECT", f"bad Location {location!r}: {exc}") from None
        if target.scheme not in ("http", "https"):
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_NETWORK,
                location,
                f"redirect to scheme {target.scheme!r} refused; only http and https are allowed",
            )
        if (status == 303 and self.method != "HEAD") or (
            status in (301, 302) and self.method == "POST"
        ):
            self.method, self.content = "GET", None
            self.headers = {k: v for k, v in self.headers.items() if k.lower() != "content-type"}
        if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port):
            self.headers = {
                k: v for k, v in self.headers.items() if k.lower() not in _CREDENTIAL_HEADERS
            }
        return target

    async def _send(self, client: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await admitted_addresses(self.adapter.policy, host, port)
        except EgressRefused as exc:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_NETWORK, _redact(url), str(exc)
            ) from None
        except OSError as exc:
            raise ActionFailed("HTTP_DNS", f"cannot resolve {host!r}: {exc}") from None
        literal = _literal(host) is not None
        headers = {"Host": url.netloc.decode("ascii"), **self.headers}
        extensions = {"sni_hostname": host} if url.scheme == "https" and not literal else {}
        client.cookies.clear()  # cookies set for one IP must not follow a redirect to another name
        last: httpx.ConnectError | None = None
        for ip in addresses:
            request = client.build_request(
                self.method,
                url.copy_with(host=str(ip)),
                headers=headers,
                content=self.content,
                extensions=extensions,
            )
            try:
                return await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last = exc
            except httpx.HTTPError as exc:
                raise ActionFailed(
                    "HTTP_ERROR", f"{self.method} {_redact(url)}: {type(exc).__name__}: {exc}"
                ) from None
        raise ActionFailed("HTTP_CONNECT", f"cannot connect to {host}:{port}: {last}")

    async def _output(self, url: httpx.URL, response: httpx.Response) -> dict[str, Any]:
        cap = self.adapter.max_bytes
        kept = bytearray()
        truncated = False
        try:
            async for chunk in response.aiter_bytes():
                kept.extend(chunk)
                if len(kept) > cap:
                    del kept[cap:]
                    truncated = True
                    break
        except httpx.HTTPError as exc:
            raise ActionFailed(
                "HTTP_ERROR", f"{self.method} {_redact(url)}: {type(exc).__name__}: {exc}"
            ) from None
        text = bytes(kept).decode(_codec(response.charset_encoding), errors="replace")
        text = text.replace("\x00", "\u2400")
        body: Any = text
        if not truncated and _is_json(response.headers.get("content-type", "")):
            body = _parse_json(text)
        output = {
            "status": response.status_code,
            "url": _redact(url),
            "headers": {k: ", ".join(response.headers.get_list(k)) for k in response.headers},
            "body": body,
            "size": len(kept),
            "truncated": truncated,
        }
        status = response.status_code
        if not 200 <= status < 300 and status not in self.accept:
            raise ActionFailed(
                "HTTP_STATUS",
                f"{self.method} {_redact(url)} answered {status} {response.reason_phrase}".rstrip(),
                output=output,
            )
        return output


def _codec(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:
        return "utf-8"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
