"""gRPC surface: the RunService servicer, error mapping, health, reflection, drain."""

from runwire.rpc._handlers import SERVICE_NAME
from runwire.rpc._server import LIVENESS_SERVICE, RunwireServer, ServerFailed
from runwire.rpc._service import PRINCIPAL_HEADER, RunService
from runwire.rpc._status import DOMAIN, to_status

__all__ = [
    "DOMAIN",
    "LIVENESS_SERVICE",
    "PRINCIPAL_HEADER",
    "SERVICE_NAME",
    "RunService",
    "RunwireServer",
    "ServerFailed",
    "to_status",
]
