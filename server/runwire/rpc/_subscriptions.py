"""SubscriptionService: webhook subscriptions in and out, checked field by field."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from datetime import datetime

import grpc
import httpx

from runwire.adapters import EgressPolicy
from runwire.adapters.http import EgressRefused, admitted_addresses
from runwire.errors import (
    FieldViolation,
    InvalidArgument,
    PageTokenInvalid,
    SubscriptionNotFound,
    SubscriptionRequestIdReused,
)
from runwire.rpc._service import principal_of
from runwire.rpc._status import mapped
from runwire.store import (
    LogFilter,
    NewSubscription,
    SubscriptionRow,
    SubscriptionStore,
    encode_cursor,
)
from runwire.v1 import run_service_pb2, subscription_service_pb2
from runwire.webhooks import Deliverer, generate_secret, secret_key, target_problem

__all__ = ["SUBSCRIPTION_SERVICE_NAME", "SubscriptionService"]

SUBSCRIPTION_SERVICE_NAME = "runwire.v1.SubscriptionService"

pb = subscription_service_pb2
_NAME = re.compile(r"^subscriptions/(sub_[0-9a-f]{32})$")
_SERVER_SET = (
    "name",
    "state",
    "create_time",
    "delivered_cursor",
    "delivered_event_count",
    "last_delivery_time",
    "consecutive_failures",
    "last_error",
)
_STARTS = frozenset(run_service_pb2.StreamStart.values())


def _subscription_id(name: str) -> str:
    if not name:
        raise InvalidArgument([FieldViolation("name", "must not be empty")])
    m = _NAME.match(name)
    if m is None:
        raise InvalidArgument(
            [FieldViolation("name", f"must be subscriptions/{{id}}, not {name[:100]!r}")]
        )
    return m[1]


def _to_proto(row: SubscriptionRow, *, secret: bool = False) -> pb.Subscription:
    sub = pb.Subscription(
        name=f"subscriptions/{row.subscription_id}",
        target_url=row.target_url,
        start=row.start,  # type: ignore[arg-type]  # stored as the StreamStart number
        state=row.state,  # type: ignore[arg-type]  # stored as the SubscriptionState number
        delivered_cursor=encode_cursor(row.delivered_pos),
        delivered_event_count=row.delivered_event_count,
        consecutive_failures=row.consecutive_failures,
        last_error=row.last_error,
        secret=row.secret if secret else "",
    )
    flt = run_service_pb2.RunEventsFilter.FromString(row.filter)
    if flt.ByteSize():
        sub.filter.CopyFrom(flt)
    sub.create_time.FromDatetime(row.create_time)
    if row.last_delivery_time is not None:
        sub.last_delivery_time.FromDatetime(row.last_delivery_time)
    return sub


def _page_token(row: SubscriptionRow) -> str:
    raw = json.dumps({"t": row.create_time.isoformat(), "s": row.subscription_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(token: str) -> tuple[datetime, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return datetime.fromisoformat(raw["t"]), str(raw["s"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PageTokenInvalid([FieldViolation("page_token", "malformed page token")]) from exc


class SubscriptionService:
    """The SubscriptionService implementation over the subscriptions table."""

    def __init__(
        self,
        subscriptions: SubscriptionStore,
        deliverer: Deliverer | None,
        policy: EgressPolicy,
    ) -> None:
        self.subscriptions = subscriptions
        self.deliverer = deliverer
        self.policy = policy

    async def _row(self, name: str) -> SubscriptionRow:
        row = await self.subscriptions.get(_subscription_id(name))
        if row is None:
            raise SubscriptionNotFound(name)
        return row

    async def _check_create(self, request: pb.CreateSubscriptionRequest) -> None:
        out: list[FieldViolation] = []
        if len(request.request_id) > 128:
            out.append(FieldViolation("request_id", "must be at most 128 characters"))
        elif request.request_id and not request.request_id.isprintable():
            out.append(FieldViolation("request_id", "must be printable"))
        if not request.HasField("subscription"):
            raise InvalidArgument([FieldViolation("subscription", "is required"), *out])
        sub = request.subscription
        for field in _SERVER_SET:
            present = (
                sub.HasField(field)
                if field in ("create_time", "last_delivery_time")
                else bool(getattr(sub, field))
            )
            if present:
                out.append(FieldViolation(f"subscription.{field}", "is set by the server"))
        if not sub.target_url:
            out.append(FieldViolation("subscription.target_url", "is required"))
        elif why := target_problem(sub.target_url, self.policy):
            out.append(FieldViolation("subscription.target_url", why))
        else:
            url = _url(sub.target_url)
            try:
                await admitted_addresses(
                    self.policy, url[0], url[1], flag="the server's --webhook-allow"
                )
            except EgressRefused as exc:
                out.append(FieldViolation("subscription.target_url", str(exc)))
            except OSError as exc:
                out.append(FieldViolation("subscription.target_url", f"does not resolve: {exc}"))
        if sub.secret:
            try:
                secret_key(sub.secret)
            except ValueError as exc:
                out.append(FieldViolation("subscription.secret", str(exc)))
        if sub.start not in _STARTS:
            out.append(FieldViolation("subscription.start", f"unknown StreamStart {sub.start}"))
        try:
            LogFilter.from_proto(sub.filter, path="subscription.filter")
        except InvalidArgument as exc:
            out.extend(exc.violations)
        if out:
            raise InvalidArgument(out)

    @mapped
    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSubscriptionResponse:
        await self._check_create(request)
        sub = request.subscription
        digest = hashlib.sha256(sub.SerializeToString(deterministic=True)).hexdigest()
        row, created = await self.subscriptions.create(
            NewSubscription(
                subscription_id=f"sub_{uuid.uuid4().hex}",
                target_url=sub.target_url,
                filter=sub.filter.SerializeToString(deterministic=True),
                secret=sub.secret or generate_secret(),
                start=sub.start or run_service_pb2.STREAM_START_LATEST,
                request_id=request.request_id or None,
                request_digest=digest,
                principal=principal_of(context),
            )
        )
        if not created and row.request_digest != digest:
            raise SubscriptionRequestIdReused(
                request.request_id, f"subscriptions/{row.subscription_id}"
            )
        if self.deliverer is not None:
            self.deliverer.wake()
        # A retried create (same request_id and body) gets the secret again: the
        # caller that lost the first answer would otherwise never learn it.
        return pb.CreateSubscriptionResponse(subscription=_to_proto(row, secret=True))

    @mapped
    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionResponse:
        return pb.GetSubscriptionResponse(subscription=_to_proto(await self._row(request.name)))

    @mapped
    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSubscriptionsResponse:
        if request.page_size < 0:
            raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
        if len(request.page_token) > 1024:
            raise InvalidArgument([FieldViolation("page_token", "must be at most 1024 characters")])
        size = min(request.page_size or 50, 500)
        after = _after(request.page_token) if request.page_token else None
        rows = await self.subscriptions.page(after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return pb.ListSubscriptionsResponse(
            subscriptions=[_to_proto(r) for r in rows],
            next_page_token=_page_token(rows[-1]) if more else "",
        )

    @mapped
    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSubscriptionResponse:
        if not await self.subscriptions.delete(_subscription_id(request.name)):
            raise SubscriptionNotFound(request.name)
        return pb.DeleteSubscriptionResponse()

    @mapped
    async def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeSubscriptionResponse:
        row = await self.subscriptions.resume(_subscription_id(request.name))
        if row is None:
            raise SubscriptionNotFound(request.name)
        if self.deliverer is not None:
            self.deliverer.wake()
        return pb.ResumeSubscriptionResponse(subscription=_to_proto(row))


def _url(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)
