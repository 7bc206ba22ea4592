"""The generated runwire.v1 messages, enums and async RunService stub (betterproto2)."""

from ._gen.runwire.v1 import *  # noqa: F403 (the generated module's own __all__ is the API)
from ._gen.runwire.v1 import __all__ as __all__
