"""Webhook delivery: Standard Webhooks signatures, batch bodies, egress-checked POSTs,
and the per-process loop that leases subscriptions and delivers them from the log."""

from runwire.webhooks._deliverer import Deliverer, DeliverySettings, backoff
from runwire.webhooks._payload import EVENT_TYPE, build_batch, event_json
from runwire.webhooks._sender import Outcome, Sender, target_problem
from runwire.webhooks._signing import SECRET_PREFIX, generate_secret, secret_key, sign, verify

__all__ = [
    "EVENT_TYPE",
    "SECRET_PREFIX",
    "Deliverer",
    "DeliverySettings",
    "Outcome",
    "Sender",
    "backoff",
    "build_batch",
    "event_json",
    "generate_secret",
    "secret_key",
    "sign",
    "target_problem",
    "verify",
]
