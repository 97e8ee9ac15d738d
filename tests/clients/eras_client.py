"""eras_client.py - the official Python SDK (mcp==2.3.0) as a client of one protocol era, for tests/integration/eras.rs.

Run with target/peers/venv/bin/python. Connects once, runs the steps in order on that one connection and prints ONE
JSON line on stdout:

  {"protocolVersion": <the SDK's negotiated version>, "sent": [<what the client wrote, in order>],
   "steps": [<one output per step>]}

where each "sent" entry is {"method": m, "meta_version": <params._meta["io.modelcontextprotocol/protocolVersion"]
or null>} for a request, {"notification": m} for a notification: the client's own wire, so a test can see which
handshake (initialize or server/discover, or none for a pinned modern client) it really made.

  eras_client.py --mode legacy|auto|2026-07-28 --url URL [--header NAME:VALUE ...] --steps JSON
  eras_client.py --mode ... --steps JSON --stdio -- CMD [ARGS...]

Steps (a JSON array):
  {"list": true}                      -> {"tools": [names]} (every page)
  {"call": NAME, "args": {..}}        -> {"isError": b, "text": [..]} or {"error": {"code": c, "message": m}}
  {"progress": NAME, "args": {..}}    -> the call with a progress callback (so it carries _meta.progressToken):
                                         {"result": {as for call} | "error": {..}, "progress": [{"progress", "total",
                                         "message"}..]}

Exit 0 once connected (call errors are output, not failures); 1 when connecting failed (exception on stderr).
"""

import argparse
import asyncio
import json
import os
import sys
import traceback
import warnings
from contextlib import AsyncExitStack, asynccontextmanager

warnings.simplefilter("ignore")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

META_VERSION = "io.modelcontextprotocol/protocolVersion"


def error_obj(exc):
    if isinstance(exc, MCPError):
        return {"error": {"code": exc.code, "message": exc.message}}
    return {"error": {"code": None, "message": "%s: %s" % (type(exc).__name__, exc)}}


def leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


class TappedWriteStream:
    """The transport's write stream, recording each message the SDK sends."""

    def __init__(self, inner, sent):
        self._inner, self._sent = inner, sent

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def send(self, item):
        try:
            msg = getattr(item, "message", item)
            msg = getattr(msg, "root", msg)
            method = getattr(msg, "method", None)
            if method is not None:
                if getattr(msg, "id", None) is not None:
                    params = getattr(msg, "params", None) or {}
                    meta = params.get("_meta") if isinstance(params, dict) else None
                    version = meta.get(META_VERSION) if isinstance(meta, dict) else None
                    self._sent.append({"method": method, "meta_version": version})
                else:
                    self._sent.append({"notification": method})
        except Exception:  # noqa: BLE001 - a recording bug must not break the session
            traceback.print_exc(file=sys.stderr)
        return await self._inner.send(item)

    async def aclose(self):
        await self._inner.aclose()

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)


@asynccontextmanager
async def tapped(transport, sent):
    async with transport as (read_stream, write_stream):
        yield read_stream, TappedWriteStream(write_stream, sent)


def summarize(r):
    blocks = r.content or []
    return {"isError": bool(r.is_error), "text": [b.text for b in blocks if getattr(b, "type", None) == "text"]}


async def call(client, name, args, progress_callback=None):
    try:
        return summarize(await client.call_tool(name, args, progress_callback=progress_callback))
    except Exception as exc:  # noqa: BLE001 - a JSON-RPC error is an output
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


async def step(client, s):
    try:
        if "list" in s:
            return {"tools": await tool_names(client)}
        if "call" in s:
            return await call(client, s["call"], s.get("args") or {})
        if "progress" in s:
            seen = []

            async def on_progress(progress, total, message):
                seen.append({"progress": progress, "total": total, "message": message})

            r = await call(client, s["progress"], s.get("args") or {}, progress_callback=on_progress)
            out = {"error": r["error"]} if "error" in r else {"result": r}
            out["progress"] = seen
            return out
        return {"error": {"code": None, "message": "unknown step: %s" % json.dumps(s)}}
    except Exception as exc:  # noqa: BLE001
        return error_obj(exc)


async def run(opts, stdio_cmd):
    sent, connected = [], False
    try:
        async with AsyncExitStack() as stack:
            if stdio_cmd is not None:
                transport = stdio_client(
                    StdioServerParameters(command=stdio_cmd[0], args=stdio_cmd[1:], env=dict(os.environ))
                )
            else:
                headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in opts.header)} or None
                http = create_mcp_http_client(headers=headers)
                stack.push_async_callback(http.aclose)
                transport = streamable_http_client(opts.url, http_client=http)
            client = Client(tapped(transport, sent), mode=opts.mode, cache=None)
            async with client:
                connected = True
                steps = [await step(client, s) for s in opts.steps]
                line = {"protocolVersion": client.protocol_version, "sent": sent, "steps": steps}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        label = "error after connecting" if connected else "connection failed"
        sys.stderr.write("eras_client: %s: %s\n" % (label, "; ".join(map(repr, leaves(exc)))))
        traceback.print_exception(exc, file=sys.stderr)
        return 1


def main():
    argv = sys.argv[1:]
    stdio_cmd = None
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, stdio_cmd = argv[:i], argv[i + 1:]
        if stdio_cmd[:1] == ["--"]:
            stdio_cmd = stdio_cmd[1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--mode", required=True)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--steps", required=True)
    ap.add_argument("--deadline", type=float, default=90.0)
    opts = ap.parse_args(argv)
    if (opts.url is None) == (stdio_cmd is None) or (stdio_cmd is not None and not stdio_cmd):
        sys.stderr.write("eras_client: need exactly one of --url / --stdio -- CMD\n")
        sys.exit(64)
    opts.steps = json.loads(opts.steps)

    async def bounded():
        try:
            return await asyncio.wait_for(run(opts, stdio_cmd), opts.deadline)
        except asyncio.TimeoutError:
            sys.stderr.write("eras_client: deadline of %ss ran out\n" % opts.deadline)
            return 2

    sys.exit(asyncio.run(bounded()))


if __name__ == "__main__":
    main()
