"""ToolContext and secret(): what a tool knows about the call it serves.

Inside a tool worker the context is bound for every call: the tool's name, its replace-mode
secrets mapped to their placeholders, and the caller's thread key when the call came from a
thread's sandbox. Outside a worker (a tool's own tests) nothing is bound and ``secret()``
falls back to the environment.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

_MISSING = object()


@dataclass(frozen=True)
class ToolContext:
    """The tool serving a call, and who called it."""

    name: str
    secrets: Dict[str, str] = field(default_factory=dict)
    thread_key: Optional[str] = None
    container_id: Optional[str] = None


_CURRENT: contextvars.ContextVar[Optional[ToolContext]] = contextvars.ContextVar("centaur_tool_context", default=None)


def current_tool_context() -> Optional[ToolContext]:
    """The context bound to this call, or None outside a tool worker."""
    return _CURRENT.get()


def bind(ctx: ToolContext) -> contextvars.Token:
    """Binds ``ctx`` for the current call (the worker does this)."""
    return _CURRENT.set(ctx)


def unbind(token: contextvars.Token) -> None:
    """Undoes :func:`bind`."""
    _CURRENT.reset(token)


def secret(key: str, default: Any = _MISSING) -> str:
    """The placeholder for the secret ``key`` — never its real value.

    Looks in the bound context's secrets, then the environment (where the worker's
    placeholders also are), then ``default``; otherwise raises KeyError. The placeholder is
    what the tool puts where the credential goes (a header, a query parameter); the tool's
    gateway replaces it on the wire for the hosts the tool declared. Because a placeholder is
    always returned, do not use ``secret()`` to decide whether a secret is configured.
    """
    ctx = _CURRENT.get()
    if ctx is not None and key in ctx.secrets:
        return ctx.secrets[key]
    value = os.environ.get(key)
    if value:
        return value
    if default is not _MISSING:
        return default
    name = ctx.name if ctx is not None else os.environ.get("CENTAUR_TOOL_NAME", "?")
    raise KeyError(f"Missing secret '{key}' for tool '{name}'")


def current_thread_key() -> Optional[str]:
    """The thread whose agent made this call, if any (``CENTAUR_THREAD_KEY`` otherwise)."""
    ctx = _CURRENT.get()
    if ctx is not None and ctx.thread_key:
        return ctx.thread_key
    return os.environ.get("CENTAUR_THREAD_KEY") or None


def current_session_context() -> Dict[str, Any]:
    """What the tool may know of the session: its tool name and the calling thread."""
    ctx = _CURRENT.get()
    return {
        "tool": ctx.name if ctx is not None else os.environ.get("CENTAUR_TOOL_NAME"),
        "thread_key": current_thread_key(),
    }
