"""Adapters: named families of actions that nodes run, in one registry."""

from __future__ import annotations

from runwire.adapters._base import ActionFailed, ActionSpec, Adapter, NodeContext, SandboxRefused
from runwire.adapters._registry import Registry
from runwire.adapters.fs import FsAdapter
from runwire.adapters.http import EgressPolicy, HttpAdapter
from runwire.adapters.shell import ShellAdapter, ShellLimits
from runwire.adapters.util import UtilAdapter

__all__ = [
    "ActionFailed",
    "ActionSpec",
    "Adapter",
    "EgressPolicy",
    "FsAdapter",
    "HttpAdapter",
    "NodeContext",
    "Registry",
    "SandboxRefused",
    "ShellAdapter",
    "ShellLimits",
    "UtilAdapter",
]
