"""Store.create_run against a real Postgres: the row it answers StartRun with
is the row stored, though it reads back only the times Postgres stamped.
Store.request_control: who asked and why stay those of the request that
changed what is asked."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg

from runwire.store import NewRun, Store
from runwire.v1 import events_pb2


def _new_run() -> NewRun:
    return NewRun(
        run_id=f"run_{uuid.uuid4().hex}",
        flow_name="f",
        flow_digest="1" * 64,
        flow_json={"name": "f", "nodes": [{"id": "a"}]},
        inputs={},
        labels={},
        request_id="",
        request_digest="",
        principal="cert:alice",
        status=events_pb2.RUN_STATUS_PENDING,
        node_count=1,
    )


async def test_request_control_keeps_the_reason_of_the_request_that_changed_it(
    database_url: str,
) -> None:
    """Regression: PauseRun(reason=lunch) then an idempotent PauseRun() overwrote the
    reason, and the owner, reading the row on the first NOTIFY, paused with ''."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = Store(pool)
        new = _new_run()
        await store.create_run(new, owner_id="me", lease_seconds=30)

        async def control(pause: bool | None, cancel: bool, who: str, why: str) -> tuple[str, str]:
            row = await store.request_control(
                new.run_id, pause=pause, cancel=cancel, principal=who, reason=why
            )
            assert row is not None
            return row.control_principal, row.control_reason

        assert await control(True, False, "alice", "lunch") == ("alice", "lunch")
        assert await control(True, False, "bob", "") == ("alice", "lunch")  # already asked
        assert await control(False, False, "bob", "back") == ("bob", "back")  # a change
        assert await control(False, False, "carol", "") == ("bob", "back")
        assert await control(None, True, "dave", "wrong flow") == ("dave", "wrong flow")
        assert await control(None, True, "erin", "") == ("dave", "wrong flow")
        row = await store.get_run(new.run_id)
        assert row is not None
        assert (row.control_principal, row.control_reason) == ("dave", "wrong flow")
    finally:
        await pool.close()


async def test_create_run_answers_the_row_as_stored(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        store = Store(pool)
        new = NewRun(
            run_id=f"run_{uuid.uuid4().hex}",
            flow_name="f",
            flow_digest="1" * 64,
            flow_json={"name": "f", "nodes": [{"id": "a", "settings": {"x": [1, 2.5, None]}}]},
            inputs={"n": 3, "s": "1.10", "deep": {"k": [True, None]}},
            labels={"team": "a"},
            request_id="req-1",
            request_digest="2" * 64,
            principal="cert:alice",
            status=events_pb2.RUN_STATUS_PENDING,
            node_count=1,
        )
        created, fresh = await store.create_run(new, owner_id="me", lease_seconds=30)
        assert fresh
        assert created == await store.get_run(new.run_id)
        # The same request id again: the stored run, not a second one.
        again, fresh = await store.create_run(
            dataclasses.replace(new, run_id=f"run_{uuid.uuid4().hex}"),
            owner_id="me",
            lease_seconds=30,
        )
        assert not fresh
        assert again == created
    finally:
        await pool.close()
