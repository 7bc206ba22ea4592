"""Replication: lease renewal, takeover of runs whose owner went away, and the
one route by which control requests reach a local run. No gRPC, no SQL: it
drives the engine through `runwire.engine` and the database through
`runwire.store`."""

from runwire.replica._replica import Replica
from runwire.replica._retention import PruneResult, Retention

__all__ = ["PruneResult", "Replica", "Retention"]
