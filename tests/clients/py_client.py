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

Scenarios:
  list                      {"tools":[names], "server":{serverInfo}, "protocolVersion":..., "capabilities":{...}}
  call NAME JSON_ARGS       {"isError":b, "text":[...], "structured":obj|null, "types":[...]}
                            or {"error":{"code":c,"message":m}} on a JSON-RPC (or other call) error
  concurrent NAME JSON_ARGS N   N concurrent calls on one session: {"ok":n, "errors":[first 5], "elapsed_ms":t}
  script FILE               JSON array of steps run in order on ONE session, one output line per step:
                            {"call":NAME,"args":{..},"timeout_s"?:S} | {"list":true} | {"sleep_ms":N}
                            | {"ping":true} | {"concurrent":NAME,"args":{..},"n":N}

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
from contextlib import AsyncExitStack

warnings.simplefilter("ignore")  # send_ping and friends are deprecated for 2026-07-28; keep stderr clean

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.sse import sse_client  # noqa: E402
from mcp.client.streamable_http import DEFAULT_MAX_SSE_EVENT_SIZE, streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402


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


async def call(client, name, args, timeout=None):
    try:
        r = dump(await client.call_tool(name, args, read_timeout_seconds=timeout))
    except Exception as exc:  # JSON-RPC error, timeout, closed connection, invalid result ...
        return error_obj(exc)
    blocks = r.get("content") or []
    return {
        "isError": bool(r.get("isError", False)),
        "text": [b["text"] for b in blocks if b.get("type") == "text"],
        "structured": r.get("structuredContent"),
        "types": [b.get("type") for b in blocks],
    }


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


def make_target(opts, stdio_cmd, stack):
    if stdio_cmd is not None:
        # The SDK passes only a short allow-list of env vars (PATH, HOME, ...) to the child by default;
        # pass ours through so the gateway under test sees its configuration.
        return StdioServerParameters(command=stdio_cmd[0], args=stdio_cmd[1:], env=dict(os.environ))
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
    try:
        async with AsyncExitStack() as stack:
            target = make_target(opts, stdio_cmd, stack)
            client = Client(target, mode=opts.mode, read_timeout_seconds=opts.timeout, cache=None)
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
    ap.add_argument("scenario", choices=["list", "call", "concurrent", "script"])
    ap.add_argument("args", nargs="*")
    try:
        opts = ap.parse_args(argv)
    except SystemExit as e:
        sys.exit(64 if e.code else 0)
    need = {"list": 0, "call": 1, "concurrent": 3, "script": 1}[opts.scenario]
    if (opts.url is None) == (stdio_cmd is None) or (stdio_cmd is not None and not stdio_cmd) or len(opts.args) < need:
        ap.print_usage(sys.stderr)
        sys.stderr.write("py_client: need exactly one of --url / --stdio -- CMD, and the scenario's arguments\n")
        sys.exit(64)
    try:  # bad arguments are usage errors, found before connecting
        opts.call_args = json.loads(opts.args[1]) if opts.scenario in ("call", "concurrent") and len(opts.args) > 1 else {}
        if opts.scenario == "concurrent":
            int(opts.args[2])
        if opts.scenario == "script":
            with open(opts.args[0]) as f:
                opts.steps = json.load(f)
            assert isinstance(opts.steps, list), "a script is a JSON array of steps"
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
