"""py_client.py - the downstream test client: the official Python SDK (mcp==2.3.0) driven from the CLI.

Run with target/peers/venv/bin/python. Prints one JSON line per result on stdout (ASCII, compact).

  py_client.py [options] SCENARIO [ARGS...] --stdio -- CMD [CMD_ARGS...]
  py_client.py --stdio -- CMD [CMD_ARGS...] -- [options] SCENARIO [ARGS...]
  py_client.py --url URL [options] SCENARIO [ARGS...]

The stdio command is everything after `--stdio --`, up to a second standalone `--` if there is one.

Options:
  --mode legacy|auto        SDK connect mode (default auto: server/discover first, then initialize)
  --transport streamable|sse  for --url: Streamable HTTP (default) or the legacy 2024-11-05 HTTP+SSE
  --header NAME:VALUE       extra HTTP header on every request (repeatable)
  --timeout S               per-request read timeout in seconds (default: none)
  --max-sse-event-bytes N   SDK limit on one SSE event (default: the SDK's 1 MiB; 0 = unlimited)
  --deadline S              give up on the whole run after S seconds (default 120), exit 2
  --sampling-text TEXT      declare sampling; answer every sampling/createMessage with an assistant text
                            message TEXT (model "py-client-model", stopReason "endTurn"); params are recorded
  --elicit-json JSON        declare elicitation (form and url); form mode: accept with content JSON (an
                            object), url mode: accept without content; params are recorded
  --roots URI[,URI...]      declare roots; answer roots/list with these file:// URIs; requests are counted
  --linger-ms N             callbacks: keep the session open N ms after the call (late logs, roots/list)
Without --sampling-text / --elicit-json / --roots the client does not declare that capability (the SDK
declares one exactly when its callback is installed).

Scenarios:
  list                      {"tools":[names], "server":{serverInfo}, "protocolVersion":..., "capabilities":{...}}
  call NAME JSON_ARGS       {"isError":b, "text":[...], "structured":obj|null, "types":[...]}
                            or {"error":{"code":c,"message":m}} on a JSON-RPC (or other call) error
  concurrent NAME JSON_ARGS N   N concurrent calls on one session: {"ok":n, "errors":[first 5], "elapsed_ms":t}
  script FILE               JSON array of steps run in order on ONE session, one output line per step:
                            {"call":NAME,"args":{..},"timeout_s"?:S} | {"list":true} | {"sleep_ms":N}
                            | {"ping":true} | {"concurrent":NAME,"args":{..},"n":N}
  callbacks NAME JSON_ARGS  the call with a progress callback (so it carries _meta.progressToken) and a
                            logging callback: {"result":{as for call} | "error":{..},
                            "progress":[{"progress":p,"total":t,"message":m}..], "sampling":[params..],
                            "elicitation":[params..], "roots_asked":n, "logs":[{"level","logger","data"}..]}
  task NAME JSON_ARGS [TTL_MS]  task-augmented tools/call (2025-11-25 tasks; params.task = {"ttl":TTL_MS},
                            or {} without TTL_MS), then tasks/get polled every min(pollInterval, 200 ms)
                            until terminal or input_required, tasks/result, one more tasks/get, tasks/list:
                            {"created":task|null, "statuses":[distinct polled statuses, in order; a
                            failed poll as {"error":..}], "notified":[status of each
                            notifications/tasks/status], "result":{as for call, plus "meta"} | "error":{..},
                            "listed":[taskIds] | {"error":..}, "elicitation":[params..], "sampling":[params..]}
                            A failed call gives "created":null and its "error"; a server that ran it as a
                            plain call gives "created":null and its "result". The run's --deadline bounds the
                            polling; --timeout bounds each request (tasks/result waits for the task).
  task-cancel NAME JSON_ARGS    task-augmented call, then at once tasks/cancel, tasks/get, tasks/cancel:
                            {"created":task|null, "cancel":R, "get":R, "cancel_again":R}
  task-get TASK_ID          on this (fresh) session: {"get":R, "result":R, "cancel":R}
  subscribe URI WAIT_MS [NAME [JSON_ARGS]]  resources/subscribe, then the call NAME if given (e.g. a toggle
                            that starts updates), wait WAIT_MS, resources/unsubscribe:
                            {"updated":[uris of notifications/resources/updated], "subscribe":R,
                            "call"?:{as for call}, "unsubscribe":R}
  where R is a raw JSON-RPC result object or {"error":{"code":c,"message":m}}.

Exit 0 once connected (call errors are output, not failures); 1 on connection/setup failure (exception on
stderr); 2 when --deadline ran out; 64 on a usage error.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
import warnings
from contextlib import AsyncExitStack, asynccontextmanager

warnings.simplefilter("ignore")  # send_ping and friends are deprecated for 2026-07-28; keep stderr clean

import mcp.types as types  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.sse import sse_client  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import DEFAULT_MAX_SSE_EVENT_SIZE, streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp.shared.message import SessionMessage  # noqa: E402

TERMINAL = ("completed", "failed", "cancelled")
POLL_CAP_MS = 200  # tasks/get is polled every min(pollInterval, this)


def out(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def dump(model):
    return model.model_dump(by_alias=True, mode="json", exclude_none=True) if model is not None else None


def error_obj(exc):
    if isinstance(exc, MCPError):
        return {"error": {"code": exc.code, "message": exc.message}}
    return {"error": {"code": None, "message": "%s: %s" % (type(exc).__name__, exc)}}


def leaves(exc):
    """The real exceptions inside (nested) ExceptionGroups from anyio task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def split_argv(argv):
    """Pull `--stdio -- CMD ...` (optionally ended by a second `--`) out of argv."""
    if "--stdio" not in argv:
        return argv, None
    i = argv.index("--stdio")
    rest, tail = argv[:i], argv[i + 1:]
    if tail[:1] == ["--"]:
        tail = tail[1:]
    if "--" in tail:
        j = tail.index("--")
        return rest + tail[j + 1:], tail[:j]
    return rest, tail


class Recorder:
    """What the server sent this client outside of responses: callback requests and notifications.

    The sampling / elicitation / roots callbacks are handed to the SDK only when their option is given,
    because the SDK declares a client capability exactly when its callback is not the default one.
    """

    def __init__(self, opts):
        self.opts = opts
        self.sampling, self.elicitation, self.logs, self.progress, self.updated = [], [], [], [], []
        self.roots_asked = 0
        self.task_statuses = []  # (taskId, status) of each notifications/tasks/status, in arrival order

    def callbacks(self):
        o = self.opts
        return {
            "sampling_callback": self.on_sampling if o.sampling_text is not None else None,
            "elicitation_callback": self.on_elicit if o.elicit_content is not None else None,
            "list_roots_callback": self.on_roots if o.roots is not None else None,
            "logging_callback": self.on_log,
            "message_handler": self.on_message,
        }

    async def on_sampling(self, context, params):
        self.sampling.append(dump(params))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=self.opts.sampling_text),
            model="py-client-model",
            stop_reason="endTurn",
        )

    async def on_elicit(self, context, params):
        self.elicitation.append(dump(params))
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content=self.opts.elicit_content)

    async def on_roots(self, context):
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in self.opts.roots])

    async def on_log(self, params):
        self.logs.append({"level": params.level, "logger": params.logger, "data": params.data})

    async def on_progress(self, progress, total, message):
        self.progress.append({"progress": progress, "total": total, "message": message})

    async def on_message(self, message):
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))

    def on_wire(self, item):
        """Sees every message read from the transport, before the SDK does.

        mcp 2.3.0 leaves tasks/* out of its 2025-11-25 tables on purpose, so it drops
        notifications/tasks/status before message_handler (only a NotificationBinding would get it, and
        that needs a ClientExtension, which would add an `extensions` entry to our capabilities).
        """
        if not isinstance(item, SessionMessage) or not isinstance(item.message, types.JSONRPCNotification):
            return
        if item.message.method == "notifications/tasks/status":
            params = item.message.params or {}
            self.task_statuses.append((params.get("taskId"), params.get("status")))


class TappedReadStream:
    """A transport read stream that shows each item to `tap` on its way to the SDK."""

    def __init__(self, inner, tap):
        self._inner, self._tap = inner, tap

    def __getattr__(self, name):  # e.g. `last_context`, which the dispatcher reads after each item
        return getattr(self._inner, name)

    def _seen(self, item):
        try:
            self._tap(item)
        except Exception:  # noqa: BLE001 - a recording bug must not break the session
            traceback.print_exc(file=sys.stderr)
        return item

    async def receive(self):
        return self._seen(await self._inner.receive())

    def __aiter__(self):
        return self

    async def __anext__(self):
        return self._seen(await self._inner.__anext__())

    async def aclose(self):
        await self._inner.aclose()

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)


@asynccontextmanager
async def tapped(transport, tap):
    async with transport as (read_stream, write_stream):
        yield TappedReadStream(read_stream, tap), write_stream


def summarize(r):
    """The compact form of a CallToolResult (a dict) used by every scenario."""
    blocks = r.get("content") or []
    return {
        "isError": bool(r.get("isError", False)),
        "text": [b["text"] for b in blocks if b.get("type") == "text"],
        "structured": r.get("structuredContent"),
        "types": [b.get("type") for b in blocks],
    }


async def call(client, name, args, timeout=None, progress_callback=None):
    try:
        r = dump(await client.call_tool(name, args, read_timeout_seconds=timeout, progress_callback=progress_callback))
    except Exception as exc:  # JSON-RPC error, timeout, closed connection, invalid result ...
        return error_obj(exc)
    return summarize(r)


def result_or_error(r):
    """{"result": r} or {"error": ..} from what call() returns, for outputs that carry other keys too."""
    return {"error": r["error"]} if "error" in r else {"result": r}


async def raw_request(client, method, params, timeout=None):
    """Send a request the SDK has no method for and return the raw result dict (MCPError on an error).

    mcp 2.3.0 leaves tasks/* out of its 2025-11-25 tables on purpose and validates every tools/call result
    as a CallToolResult, so a CreateTaskResult cannot come back through send_request / call_tool. So this
    does what send_request does up to the wire (the session's stamp: protocol-version header, and the
    _meta envelope on 2026 sessions; the read timeout) and then uses the dispatcher directly.
    """
    session = client.session
    data = {"method": method, "params": dict(params)}
    opts = {}
    session._stamp(data, opts)
    timeout = timeout if timeout is not None else client.read_timeout_seconds
    if timeout is not None:
        opts["timeout"] = timeout
    return await session._dispatcher.send_raw_request(method, data["params"], opts)


async def attempt(client, method, params):
    try:
        return await raw_request(client, method, params)
    except Exception as exc:
        return error_obj(exc)


async def tool_names(client):
    names, cursor = [], None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return names


async def concurrent(client, name, args, n):
    # List once first: otherwise the SDK follows each first call of an unlisted tool with its own
    # tools/list (to learn output schemas), which would add n tools/list requests to the load.
    await tool_names(client)
    start = time.monotonic()
    results = await asyncio.gather(*(call(client, name, args) for _ in range(n)))
    errors = []
    for r in results:
        if "error" in r:
            errors.append("%s %s" % (r["error"]["code"], r["error"]["message"]))
        elif r["isError"]:
            errors.append("isError: %s" % " ".join(r["text"]))
    return {"ok": n - len(errors), "errors": errors[:5], "elapsed_ms": int((time.monotonic() - start) * 1000)}


async def step(client, s):
    try:
        if "call" in s:
            return await call(client, s["call"], s.get("args") or {}, s.get("timeout_s"))
        if "list" in s:
            return {"tools": await tool_names(client)}
        if "sleep_ms" in s:
            await asyncio.sleep(s["sleep_ms"] / 1000.0)
            return {"slept_ms": s["sleep_ms"]}
        if "ping" in s:
            await client.send_ping()
            return {"ping": "ok"}
        if "concurrent" in s:
            return await concurrent(client, s["concurrent"], s.get("args") or {}, int(s.get("n", 2)))
        return {"error": {"code": None, "message": "unknown step: %s" % json.dumps(s)}}
    except Exception as exc:
        return error_obj(exc)


async def callbacks(client, rec, name, args, linger_ms):
    r = await call(client, name, args, progress_callback=rec.on_progress)
    if linger_ms:
        await asyncio.sleep(linger_ms / 1000.0)
    return dict(result_or_error(r), progress=rec.progress, sampling=rec.sampling, elicitation=rec.elicitation,
                roots_asked=rec.roots_asked, logs=rec.logs)


async def create_task(client, name, args, ttl_ms):
    """A task-augmented tools/call: (task object or None, the raw result or {"error":..})."""
    try:
        r = await raw_request(client, "tools/call", {"name": name, "arguments": args,
                                                     "task": {} if ttl_ms is None else {"ttl": ttl_ms}})
    except Exception as exc:
        return None, error_obj(exc)
    return r.get("task"), r


async def task(client, rec, name, args, ttl_ms):
    created, r = await create_task(client, name, args, ttl_ms)
    statuses, outcome = [], None

    def seen(status):  # statuses lists each distinct status once, in the order first seen
        if not statuses or statuses[-1] != status:
            statuses.append(status)

    if created is None:  # an error, or a server that ran the call as a plain one
        outcome = result_or_error(r if "error" in r else summarize(r))
    else:
        tid = created["taskId"]
        while True:  # the run's --deadline bounds this
            got = await attempt(client, "tasks/get", {"taskId": tid})
            if "error" in got:
                seen({"error": got["error"]})
                break
            seen(got.get("status"))
            if got.get("status") in TERMINAL + ("input_required",):
                break
            poll_ms = got.get("pollInterval", POLL_CAP_MS)
            await asyncio.sleep(max(10, min(poll_ms, POLL_CAP_MS)) / 1000.0)
        # tasks/result blocks until the task is terminal; input it needs (elicitation, sampling) is
        # requested while it waits, and answered by the callbacks.
        got = await attempt(client, "tasks/result", {"taskId": tid})
        outcome = result_or_error(got if "error" in got else dict(summarize(got), meta=got.get("_meta")))
        got = await attempt(client, "tasks/get", {"taskId": tid})
        if "error" not in got:
            seen(got.get("status"))
        # The terminal status notification may trail the response (over HTTP it rides the GET stream).
        for _ in range(25):
            if any(t == tid and s in TERMINAL for t, s in rec.task_statuses):
                break
            await asyncio.sleep(0.02)
    listed, cursor = [], None
    for _ in range(100):
        page = await attempt(client, "tasks/list", {"cursor": cursor} if cursor else {})
        if "error" in page:
            listed = page
            break
        listed += [t.get("taskId") for t in page.get("tasks") or []]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    return dict({"created": created, "statuses": statuses, "notified": [s for _, s in rec.task_statuses]},
                **outcome, listed=listed, elicitation=rec.elicitation, sampling=rec.sampling)


async def task_cancel(client, name, args):
    created, r = await create_task(client, name, args, None)
    res = {"created": created}
    if created is None:
        res.update(result_or_error(r if "error" in r else summarize(r)))
        return res
    tid = {"taskId": created["taskId"]}
    res["cancel"] = await attempt(client, "tasks/cancel", tid)
    res["get"] = await attempt(client, "tasks/get", tid)
    res["cancel_again"] = await attempt(client, "tasks/cancel", tid)
    return res


async def task_get(client, task_id):
    tid = {"taskId": task_id}
    return {"get": await attempt(client, "tasks/get", tid), "result": await attempt(client, "tasks/result", tid),
            "cancel": await attempt(client, "tasks/cancel", tid)}


async def subscribe(client, rec, uri, wait_ms, name, args):
    res = {}
    try:
        res["subscribe"] = dump(await client.subscribe_resource(uri))
    except Exception as exc:
        res["subscribe"] = error_obj(exc)
    if name is not None:
        res["call"] = await call(client, name, args)
    await asyncio.sleep(wait_ms / 1000.0)
    res["updated"] = list(rec.updated)
    try:
        res["unsubscribe"] = dump(await client.unsubscribe_resource(uri))
    except Exception as exc:
        res["unsubscribe"] = error_obj(exc)
    return res


def make_target(opts, stdio_cmd, stack):
    if stdio_cmd is not None:
        # The SDK passes only a short allow-list of env vars (PATH, HOME, ...) to the child by default;
        # pass ours through so the gateway under test sees its configuration.
        return stdio_client(StdioServerParameters(command=stdio_cmd[0], args=stdio_cmd[1:], env=dict(os.environ)))
    headers = dict(h.split(":", 1) for h in opts.header) if opts.header else None
    headers = {k.strip(): v.strip() for k, v in headers.items()} if headers else None
    if opts.transport == "sse":
        return sse_client(opts.url, headers=headers)
    limit = opts.max_sse_event_bytes
    limit = DEFAULT_MAX_SSE_EVENT_SIZE if limit is None else (limit or None)
    http = create_mcp_http_client(headers=headers)
    stack.push_async_callback(http.aclose)
    return streamable_http_client(opts.url, http_client=http, max_sse_event_size=limit)


async def run(opts, stdio_cmd):
    state = {"connected": False}
    rec = Recorder(opts)
    try:
        async with AsyncExitStack() as stack:
            target = tapped(make_target(opts, stdio_cmd, stack), rec.on_wire)
            client = Client(target, mode=opts.mode, read_timeout_seconds=opts.timeout, cache=None, **rec.callbacks())
            async with client:
                state["connected"] = True
                sc, a = opts.scenario, opts.args
                if sc == "list":
                    out({
                        "tools": await tool_names(client),
                        "server": dump(client.server_info),
                        "protocolVersion": client.protocol_version,
                        "capabilities": dump(client.server_capabilities),
                    })
                elif sc == "call":
                    out(await call(client, a[0], opts.call_args))
                elif sc == "concurrent":
                    out(await concurrent(client, a[0], opts.call_args, int(a[2])))
                elif sc == "script":
                    for s in opts.steps:
                        out(await step(client, s))
                elif sc == "callbacks":
                    out(await callbacks(client, rec, a[0], opts.call_args, opts.linger_ms))
                elif sc == "task":
                    out(await task(client, rec, a[0], opts.call_args, opts.ttl_ms))
                elif sc == "task-cancel":
                    out(await task_cancel(client, a[0], opts.call_args))
                elif sc == "task-get":
                    out(await task_get(client, a[0]))
                elif sc == "subscribe":
                    out(await subscribe(client, rec, a[0], int(a[1]), a[2] if len(a) > 2 else None, opts.call_args))
        return 0
    except BaseException as exc:  # noqa: BLE001 - report anything, including ExceptionGroups
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(exc, asyncio.CancelledError):
            raise
        label = "error after connecting" if state["connected"] else "connection/setup failed"
        sys.stderr.write("py_client: %s: %s\n" % (label, "; ".join(map(repr, leaves(exc)))))
        traceback.print_exception(exc, file=sys.stderr)
        return 0 if state["connected"] else 1


# Positional arguments each scenario needs at least, and where its JSON_ARGS sits if it has one.
NEED = {"list": 0, "call": 1, "concurrent": 3, "script": 1, "callbacks": 1, "task": 1, "task-cancel": 1,
        "task-get": 1, "subscribe": 2}
JSON_ARGS_AT = {"call": 1, "concurrent": 1, "callbacks": 1, "task": 1, "task-cancel": 1, "subscribe": 3}


def main():
    argv, stdio_cmd = split_argv(sys.argv[1:])
    usage = next(p for p in __doc__.split("\n\n") if p.lstrip().startswith("py_client.py ["))
    ap = argparse.ArgumentParser(usage="\n" + usage)
    ap.add_argument("--url")
    ap.add_argument("--mode", default="auto", choices=["legacy", "auto"])
    ap.add_argument("--transport", default="streamable", choices=["streamable", "sse"])
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--max-sse-event-bytes", type=int, default=None)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--sampling-text", default=None)
    ap.add_argument("--elicit-json", default=None)
    ap.add_argument("--roots", default=None)
    ap.add_argument("--linger-ms", type=int, default=0)
    ap.add_argument("scenario", choices=list(NEED))
    ap.add_argument("args", nargs="*")
    try:
        opts = ap.parse_args(argv)
    except SystemExit as e:
        sys.exit(64 if e.code else 0)
    if (opts.url is None) == (stdio_cmd is None) or (stdio_cmd is not None and not stdio_cmd) \
            or len(opts.args) < NEED[opts.scenario]:
        ap.print_usage(sys.stderr)
        sys.stderr.write("py_client: need exactly one of --url / --stdio -- CMD, and the scenario's arguments\n")
        sys.exit(64)
    try:  # bad arguments are usage errors, found before connecting
        at = JSON_ARGS_AT.get(opts.scenario)
        opts.call_args = json.loads(opts.args[at]) if at is not None and len(opts.args) > at else {}
        if opts.scenario == "concurrent":
            int(opts.args[2])
        if opts.scenario == "subscribe":
            int(opts.args[1])
        opts.ttl_ms = int(opts.args[2]) if opts.scenario == "task" and len(opts.args) > 2 else None
        if opts.scenario == "script":
            with open(opts.args[0]) as f:
                opts.steps = json.load(f)
            assert isinstance(opts.steps, list), "a script is a JSON array of steps"
        opts.elicit_content = None if opts.elicit_json is None else json.loads(opts.elicit_json)
        assert opts.elicit_json is None or isinstance(opts.elicit_content, dict), "--elicit-json takes an object"
        if opts.roots is not None:
            opts.roots = [u for u in opts.roots.split(",") if u]
            assert all(u.startswith("file://") for u in opts.roots), "--roots takes file:// URIs"
    except (ValueError, OSError, AssertionError) as exc:
        sys.stderr.write("py_client: bad scenario arguments: %s\n" % exc)
        sys.exit(64)

    async def bounded():
        try:
            return await asyncio.wait_for(run(opts, stdio_cmd), opts.deadline)
        except asyncio.TimeoutError:
            sys.stderr.write("py_client: deadline of %ss ran out\n" % opts.deadline)
            return 2

    sys.exit(asyncio.run(bounded()))


if __name__ == "__main__":
    main()
