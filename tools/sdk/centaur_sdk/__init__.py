"""Centaur's Python SDK for tool plugins.

A tool is a class whose public methods are its endpoints; type hints and docstrings are
its schema. Credentials are never in the tool's hands: ``secret(name)`` returns the
*placeholder* the tool's gateway swaps for the real value on the hosts the tool declared.
"""

from centaur_sdk.context import (
    ToolContext,
    current_session_context,
    current_thread_key,
    current_tool_context,
    secret,
)

__all__ = [
    "ToolContext",
    "current_session_context",
    "current_thread_key",
    "current_tool_context",
    "secret",
]
