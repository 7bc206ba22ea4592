"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is `whsec_` followed by base64 of 24 to 64 random bytes; the decoded
bytes are the HMAC key. Each request carries `webhook-id` (the same on every
retry of a batch), `webhook-timestamp` (integer Unix seconds of the attempt)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "generate_secret", "secret_key", "sign", "verify"]

SECRET_PREFIX = "whsec_"
_MIN_KEY, _MAX_KEY = 24, 64


def generate_secret() -> str:
    """A fresh secret: `whsec_` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret.

    Raises:
        ValueError: The secret lacks the prefix, is not base64, or its key is
            not 24 to 64 bytes long.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX!r} followed by base64") from None
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise ValueError(f"must hold {_MIN_KEY} to {_MAX_KEY} bytes, not {len(key)}")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key: bytes, webhook_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when one of the space-separated `v1,` signatures matches (what a receiver checks)."""
    try:
        expected = sign(key, webhook_id, int(timestamp), body)
    except ValueError:
        return False
    return any(hmac.compare_digest(s, expected) for s in signature.split(" ") if s)
