"""The tool worker: serves one tool's methods over JSON lines on stdin and stdout.

The control plane starts ``python -m centaur_sdk.worker`` in the tool's own sandbox, behind
the tool's own gateway. Environment:

* ``CENTAUR_TOOL_NAME`` — the tool's name;
* ``CENTAUR_TOOL_MODULE`` — the module to import (``github_tool.client``); it exports a
  ``_client()`` factory or a ``Client`` class, whose public methods are the endpoints;
* ``CENTAUR_TOOL_SECRETS`` — a JSON object: replace-mode secret name → placeholder;
* ``CENTAUR_TOOL_CONCURRENCY`` — calls served at once (default 8).

Protocol (one JSON object per line):

* first, the worker says ``{"type": "describe", "description", "methods": [...]}`` or
  ``{"type": "fatal", "error"}`` (and exits 1);
* the control plane sends ``{"id", "method", "args": {...}, "context": {"thread_key"}}``;
* the worker answers ``{"id", "result"}`` or ``{"id", "error", "kind": "arguments"|"tool"}``,
  in whatever order the calls finish.

Anything the tool prints goes to stderr: stdout carries the protocol only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import sys
import threading
import traceback
import typing
from concurrent.futures import ThreadPoolExecutor

from centaur_sdk.context import ToolContext, bind, unbind

LIFECYCLE = {"close", "aclose"}
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", tuple: "array", dict: "object"}


def type_of(annotation):
    """(JSON type name, nullable) of a parameter annotation; "any" when it says nothing."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        return "any", False
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        kind = type_of(args[0])[0] if len(args) == 1 else "any"
        return kind, nullable
    if origin is not None:
        return SCALARS.get(origin, "any"), False
    return SCALARS.get(annotation, "any"), False


def doc_parts(fn):
    """The docstring's summary and its ``Args:`` entries (name → text)."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].strip()
    params, in_args = {}, False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if not stripped or (not line.startswith((" ", "\t")) and stripped.endswith(":")):
                in_args = False
                continue
            name, sep, text = stripped.partition(":")
            name = name.split("(")[0].strip()
            if sep and name.isidentifier():
                params[name] = text.strip()
    return summary, params


def describe(instance):
    """Every public method of the instance's class: name, description, parameters."""
    methods = []
    for name in sorted(dir(type(instance))):
        if name.startswith("_") or name in LIFECYCLE:
            continue
        attr = inspect.getattr_static(type(instance), name)
        if not inspect.isfunction(attr):
            continue
        fn = getattr(instance, name)
        try:
            hints = typing.get_type_hints(attr)
        except Exception:
            hints = {}
        summary, docs = doc_parts(attr)
        params = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            kind, nullable = type_of(hints.get(p.name, p.annotation))
            spec = {"type": kind}
            if nullable:
                spec["nullable"] = True
            if p.default is p.empty:
                spec["required"] = True
            else:
                spec["default"] = jsonable(p.default)
            if p.name in docs:
                spec["description"] = docs[p.name]
            params[p.name] = spec
        methods.append({"name": name, "description": summary, "parameters": params})
    return methods


def jsonable(value):
    """A JSON-encodable form of a result (dataclasses, sets, bytes, models; else str)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    for method in ("model_dump", "dict", "to_dict"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


def check_arguments(method, args):
    """Why these arguments do not fit the method's parameters, or None."""
    params = method["parameters"]
    unknown = sorted(set(args) - set(params))
    if unknown:
        known = ", ".join(params) or "none"
        return f"unknown argument(s) {', '.join(unknown)} for {method['name']} (parameters: {known})"
    missing = [p for p, s in params.items() if s.get("required") and p not in args]
    if missing:
        return f"missing required argument(s) {', '.join(missing)} for {method['name']}"
    for name, value in args.items():
        spec = params[name]
        if value is None and spec.get("nullable"):
            continue
        if not CHECKS[spec["type"]](value):
            return f"argument {name} must be {spec['type']}, got {type(value).__name__} ({json.dumps(value)[:80]})"
    return None


class Worker:
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.name = os.environ.get("CENTAUR_TOOL_NAME", "tool")
        self.secrets = json.loads(os.environ.get("CENTAUR_TOOL_SECRETS") or "{}")

    def send(self, message):
        line = json.dumps(message, default=jsonable, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def load(self):
        module = importlib.import_module(os.environ["CENTAUR_TOOL_MODULE"])
        if callable(getattr(module, "_client", None)):
            instance = module._client()
        elif inspect.isclass(getattr(module, "Client", None)):
            instance = module.Client()
        else:
            raise RuntimeError(f"{module.__name__} has neither a _client() factory nor a Client class")
        description = (inspect.getdoc(type(instance)) or inspect.getdoc(module) or "").split("\n\n")[0]
        return instance, description, describe(instance)

    def call(self, instance, methods, request):
        rid = request.get("id")
        method = methods.get(request.get("method"))
        if method is None:
            self.send({"id": rid, "error": f"no method {request.get('method')!r}", "kind": "arguments"})
            return
        args = request.get("args") or {}
        why = check_arguments(method, args)
        if why:
            self.send({"id": rid, "error": why, "kind": "arguments"})
            return
        context = request.get("context") or {}
        token = bind(ToolContext(name=self.name, secrets=self.secrets, thread_key=context.get("thread_key")))
        try:
            fn = getattr(instance, method["name"])
            result = asyncio.run(fn(**args)) if inspect.iscoroutinefunction(fn) else fn(**args)
            self.send({"id": rid, "result": jsonable(result)})
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            self.send({"id": rid, "error": f"{type(e).__name__}: {e}", "kind": "tool"})
        finally:
            unbind(token)


def main():
    # The protocol keeps the real stdout; whatever the tool prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(out)
    try:
        instance, description, methods = worker.load()
    except BaseException:
        worker.send({"type": "fatal", "error": traceback.format_exc(limit=8)})
        sys.exit(1)
    worker.send({"type": "describe", "description": description, "methods": methods})
    by_name = {m["name"]: m for m in methods}
    pool = ThreadPoolExecutor(max_workers=int(os.environ.get("CENTAUR_TOOL_CONCURRENCY") or 8))
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError as e:
            worker.send({"id": None, "error": f"not JSON: {e}", "kind": "arguments"})
            continue
        pool.submit(worker.call, instance, by_name, request)
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
