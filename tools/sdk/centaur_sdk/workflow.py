"""Durable workflows: the `ctx` a handler gets, and the worker that runs handlers for the
control plane (`python -m centaur_sdk.workflow`).

A workflow is a `.py` file that defines `WORKFLOW_NAME` and `async def handler(inp, ctx)`.
The handler *is* the workflow: every time its run resumes it runs again from the top, and
each `ctx` call it makes is numbered in order. A call the run already recorded returns its
recorded result at once (a step's function does not run again); a new one is decided by the
engine and recorded before the handler goes on. So a handler must make the same calls in the
same order every time: name steps by what they do, and keep time, randomness and I/O inside
steps.

Protocol (JSON lines; stdout is the protocol, anything printed goes to stderr):

* worker -> engine, first: `{"type": "describe", "workflows": [{name, file, version}],
  "errors": [{file, error}]}`;
* engine -> worker: `{"type": "start", "run", "workflow", "input", "checkpoints": [{seq,
  name, kind, done, value}]}`; `{"type": "answer", "run",
  "id", ...}` with `value`, `raise: {kind, message}`, `run_step: attempt` or `stop: true`;
  `{"type": "cancel", "run"}`;
* worker -> engine: `{"type": "call", "run", "id", "seq", "kind", "name", ...}`;
  `{"type": "return", "run", "value"}`; `{"type": "raise", "run", "message"}`;
  `{"type": "log", "run", "message"}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import traceback
from typing import Any, Callable


class NonRetryableError(Exception):
    """Raised by a step's function: the step fails at once, whatever its retry policy."""


class StepFailed(Exception):
    """A step failed (after its retries); its error is recorded and raised again on replay."""


class WorkflowFailed(Exception):
    """A child run failed or was cancelled, or could not start."""


class AgentFailed(Exception):
    """An agent turn failed or was cancelled, or could not start."""


_RAISED = {
    "timeout": TimeoutError,
    "workflow_failed": WorkflowFailed,
    "workflow_cancelled": WorkflowFailed,
    "agent_failed": AgentFailed,
    "not_found": LookupError,
}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried: `limit` attempts in all, `delay` seconds before the
    second, doubled each time with `backoff="exponential"`, never more than `max_delay`.
    The run is suspended between attempts (no process waits)."""

    limit: int = 1
    delay: float = 1.0
    backoff: str = "exponential"
    max_delay: float = 300.0


class _Stop(BaseException):
    """The run was suspended or ended by the engine: unwind the handler. A BaseException,
    so a handler's `except Exception` cannot swallow it."""


class Context:
    """What a handler gets as `ctx`."""

    def __init__(self, worker: "_Worker", run_id: str, checkpoints: list):
        self.run_id = run_id
        self._worker = worker
        self._recorded = {c["seq"]: c for c in checkpoints}
        self._seq = 0
        self._names: dict[str, int] = {}

    def _name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError("a ctx call needs a non-empty name")
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        return name if n == 1 else f"{name}#{n}"

    def _next(self, kind: str, name: str):
        seq = self._seq
        self._seq += 1
        rec = self._recorded.get(seq)
        if rec is not None and rec["kind"] == kind and rec["name"] == name and rec["done"]:
            return seq, rec
        return seq, None

    async def step(self, name: str, fn: Callable[[], Any], *, retry: RetryPolicy | None = None) -> Any:
        """Runs `fn` (sync or async) once and records its JSON result; a replay returns the
        recorded result without calling `fn`. Failures are retried per `retry`."""
        name = self._name(name)
        seq, rec = self._next("step", name)
        if rec is not None:
            if "error" in rec["value"]:
                raise StepFailed(rec["value"]["error"])
            return rec["value"].get("result")
        if seq in self._recorded:
            # Another call is recorded here: the engine fails the run before anything runs.
            return self._answered(await self._call(seq, "step", name, outcome=None))
        try:
            # A plain function runs on a thread, so other runs go on meanwhile.
            result = fn() if inspect.iscoroutinefunction(fn) else await asyncio.to_thread(fn)
            if inspect.isawaitable(result):
                result = await result
            json.dumps(result)
            outcome = {"result": result}
        except _Stop:
            raise
        except Exception as e:  # noqa: BLE001 - every failure of the step is recorded
            policy = retry or RetryPolicy()
            if isinstance(e, TypeError) and "JSON serializable" in str(e):
                e = NonRetryableError(f"the step's result is not JSON: {e}")
            outcome = {
                "error": f"{type(e).__name__}: {e}",
                "retryable": not isinstance(e, NonRetryableError),
                "retry": dataclasses.asdict(policy),
            }
        return self._answered(await self._call(seq, "step", name, outcome=outcome))

    async def sleep(self, name: str, seconds: float = 0, **kw) -> None:
        """Suspends the run for `seconds` (also `minutes=`, `hours=`): no process waits."""
        total = seconds + kw.pop("minutes", 0) * 60 + kw.pop("hours", 0) * 3600
        if kw:
            raise TypeError(f"sleep: unknown arguments {sorted(kw)}")
        name = self._name(name)
        seq, _ = self._next("sleep", name)
        self._answered(await self._call(seq, "sleep", name, ms=int(total * 1000)))

    async def sleep_until(self, name: str, when: datetime.datetime) -> None:
        """Suspends the run until `when` (an aware datetime)."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs an aware datetime (with a time zone)")
        name = self._name(name)
        seq, _ = self._next("sleep", name)
        self._answered(await self._call(seq, "sleep", name, until=int(when.timestamp() * 1000)))

    async def wait_for_event(
        self, name: str, *, correlation_id: str, event_type: str | None = None, timeout: float | None = None
    ) -> Any:
        """Waits for `POST /workflows/events {event_type, correlation_id, payload}` and returns
        its payload; `event_type` defaults to `name`. An event posted before the wait counts.
        Raises `TimeoutError` after `timeout` seconds."""
        name = self._name(name)
        seq, rec = self._next("event", name)
        if rec is not None:
            return self._answered(_recorded_wait(name, rec["value"]))
        answer = await self._call(
            seq, "event", name,
            event_type=event_type or name.split("#")[0],
            correlation_id=str(correlation_id),
            timeout=None if timeout is None else int(timeout * 1000),
        )
        return self._answered(answer)

    async def start_workflow(self, workflow: str, input: Any = None, *, name: str | None = None) -> str:
        """Starts a child run of `workflow` with `input` and returns its run id (once: a replay
        returns the same id). The call's name defaults to the workflow's. Cancelling this run
        cancels the child."""
        name = self._name(name or workflow)
        seq, rec = self._next("start_workflow", name)
        if rec is not None:
            return self._answered(_recorded_start(rec["value"]))
        return self._answered(await self._call(seq, "start_workflow", name, workflow=workflow, input=input))

    async def wait_for_workflow(self, run_id: str, *, name: str | None = None, timeout: float | None = None) -> Any:
        """Waits for run `run_id` to end and returns its output; raises `WorkflowFailed` if it
        failed or was cancelled, `TimeoutError` after `timeout` seconds."""
        return await self._wait(name or "wait_for_workflow", "wait_workflow", {"run_id": run_id}, timeout)

    async def run_workflow(self, workflow: str, input: Any = None, *, name: str | None = None,
                           timeout: float | None = None) -> Any:
        """`start_workflow` then `wait_for_workflow` (calls `name` and `name.wait`; `name`
        defaults to the workflow's)."""
        name = name or workflow
        run_id = await self.start_workflow(workflow, input, name=name)
        return await self.wait_for_workflow(run_id, name=f"{name}.wait", timeout=timeout)

    async def start_agent(self, name: str, text: str, *, thread_key: str | None = None, harness: str | None = None) -> str:
        """Queues an agent turn with `text` on `thread_key` (default `workflow:<run id>`) and
        returns its execution id (once: a replay returns the same turn)."""
        name = self._name(name)
        seq, rec = self._next("start_agent", name)
        if rec is not None:
            return self._answered(_recorded_start(rec["value"]))
        fields = {"text": text, "thread_key": thread_key, "harness": harness}
        answer = await self._call(seq, "start_agent", name, **{k: v for k, v in fields.items() if v is not None})
        return self._answered(answer)

    async def wait_for_agent(self, name: str, execution_id: str, *, timeout: float | None = None) -> dict:
        """Waits for the agent turn to end: `{execution_id, thread_key, result_text}`; raises
        `AgentFailed` if it failed or was cancelled."""
        return await self._wait(name, "wait_agent", {"execution_id": execution_id}, timeout)

    async def run_agent(self, name: str, text: str, *, thread_key: str | None = None, harness: str | None = None,
                        timeout: float | None = None) -> str:
        """Runs an agent turn and returns its answer's text (steps `name` and `name.wait`)."""
        execution_id = await self.start_agent(name, text, thread_key=thread_key, harness=harness)
        done = await self.wait_for_agent(f"{name}.wait", execution_id, timeout=timeout)
        return done.get("result_text") or ""

    async def _wait(self, name: str, kind: str, fields: dict, timeout: float | None) -> Any:
        name = self._name(name)
        seq, rec = self._next(kind, name)
        if rec is not None:
            return self._answered(_recorded_wait(name, rec["value"]))
        ms = None if timeout is None else int(timeout * 1000)
        return self._answered(await self._call(seq, kind, name, timeout=ms, **fields))

    def log(self, message: str) -> None:
        """A line in the server's log, tagged with the run."""
        self._worker.send({"type": "log", "run": self.run_id, "message": str(message)})

    async def _call(self, seq: int, kind: str, name: str, **fields) -> dict:
        return await self._worker.call(self.run_id, {"seq": seq, "kind": kind, "name": name, **fields})

    @staticmethod
    def _answered(answer: dict) -> Any:
        if answer.get("stop"):
            raise _Stop()
        if "raise" in answer:
            r = answer["raise"]
            raise _RAISED.get(r.get("kind"), StepFailed)(r.get("message"))
        return answer.get("value")


def _recorded_wait(name: str, value: dict) -> dict:
    if value.get("timeout"):
        return {"raise": {"kind": "timeout", "message": f"wait {name!r}: nothing came before its deadline"}}
    if "error" in value:
        return {"raise": {"kind": value.get("kind"), "message": value["error"]}}
    return {"value": value.get("payload")}


def _recorded_start(value: dict) -> dict:
    if "error" in value:
        return {"raise": {"kind": value.get("kind"), "message": value["error"]}}
    return {"value": value.get("result")}


def discover(dirs: list[str]):
    """Every `*.py` under `dirs` defining WORKFLOW_NAME and handler: (workflows, errors)."""
    found: dict[str, dict] = {}
    errors = []
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith((".", "__")))
            for f in sorted(files):
                if not f.endswith(".py") or f.startswith("_"):
                    continue
                path = os.path.join(root, f)
                try:
                    with open(path, "rb") as fh:
                        source = fh.read()
                    if b"WORKFLOW_NAME" not in source:
                        continue
                    mod_name = "centaur_workflow_" + hashlib.sha256(path.encode()).hexdigest()[:12]
                    spec = importlib.util.spec_from_file_location(mod_name, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[mod_name] = module
                    spec.loader.exec_module(module)
                    name = getattr(module, "WORKFLOW_NAME", None)
                    handler = getattr(module, "handler", None)
                    if not isinstance(name, str) or not name:
                        raise ValueError("WORKFLOW_NAME must be a non-empty string")
                    if not inspect.iscoroutinefunction(handler):
                        raise ValueError("handler must be `async def handler(inp, ctx)`")
                    schedule = getattr(module, "SCHEDULE", None)
                    webhooks = getattr(module, "WEBHOOKS", None)
                    json.dumps([schedule, webhooks])
                    found[name] = {
                        "name": name,
                        "file": path,
                        "version": hashlib.sha256(source).hexdigest()[:16],
                        "schedule": schedule,
                        "webhooks": webhooks,
                        "handler": handler,
                    }
                except Exception:  # noqa: BLE001 - a broken file is reported, the others served
                    errors.append({"file": path, "error": traceback.format_exc(limit=3)})
    return found, errors


class _Worker:
    def __init__(self, workflows: dict, out):
        self.workflows = workflows
        self.out = out
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, int], asyncio.Future] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.next_id = 0

    def send(self, msg: dict) -> None:
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()

    async def call(self, run_id: str, fields: dict) -> dict:
        self.next_id += 1
        key = (run_id, self.next_id)
        fut = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        self.send({"type": "call", "run": run_id, "id": self.next_id, **fields})
        return await fut

    async def drive(self, msg: dict) -> None:
        run_id = msg["run"]
        wf = self.workflows.get(msg["workflow"])
        try:
            if wf is None:
                raise LookupError(f"no workflow named {msg['workflow']!r} in this worker")
            ctx = Context(self, run_id, msg.get("checkpoints") or [])
            value = await wf["handler"](msg.get("input"), ctx)
            json.dumps(value)
            self.send({"type": "return", "run": run_id, "value": value})
        except (_Stop, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - the handler's failure ends the run
            self.send({"type": "raise", "run": run_id, "message": traceback.format_exc(limit=8)})
        finally:
            self.tasks.pop(run_id, None)

    def dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "start":
            old = self.tasks.pop(msg["run"], None)
            if old is not None:
                old.cancel()
            self.tasks[msg["run"]] = asyncio.get_running_loop().create_task(self.drive(msg))
        elif kind == "answer":
            fut = self.pending.pop((msg["run"], msg["id"]), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "cancel":
            task = self.tasks.pop(msg["run"], None)
            if task is not None:
                task.cancel()


async def _serve(dirs: list[str]) -> None:
    out = sys.stdout
    sys.stdout = sys.stderr
    workflows, errors = discover(dirs)
    worker = _Worker(workflows, out)
    worker.send({
        "type": "describe",
        "workflows": [{k: w[k] for k in ("name", "file", "version", "schedule", "webhooks")} for w in workflows.values()],
        "errors": errors,
    })
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        line = await lines.get()
        if line is None:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            print(f"centaur workflow worker: not JSON: {line[:200]!r}", file=sys.stderr)
            continue
        worker.dispatch(msg)


if __name__ == "__main__":
    asyncio.run(_serve([d for d in os.environ.get("CENTAUR_WORKFLOW_DIRS", "").split(":") if d]))
