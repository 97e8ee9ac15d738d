"""bridge_client.py - the official Python SDK (mcp==2.3.0) as a client that answers server requests, for the era
bridge tests (issue 22).

Run with target/peers/venv/bin/python. It connects once in one protocol era, with sampling, elicitation (form and
URL mode) and roots callbacks that answer deterministically and record every invocation, makes the calls in order
and prints ONE JSON line per call on stdout:

  {"call": TOOL, "protocolVersion": <negotiated>, "result": {"isError": b, "text": [<text items>]}
     | "error": {"code": c, "message": m, "data": d},
   "callbacks": [{"kind": "sampling"|"elicitation"|"roots", "params": {<the request params, wire JSON>}}...],
   "rounds": [{"inputResponses": [<keys>] | null, "requestState": b}...],
   "unsolicited": [<callbacks that ran outside any call so far, same shape>]}

`callbacks` are those that ran while this call was in flight, in order. In legacy mode they are the server's own
requests (`sampling/createMessage`, `elicitation/create`, `roots/list`) sent during the call; in 2026-07-28 mode
the SDK's driver runs the same callbacks for each InputRequiredResult round and retries the call by itself.
`rounds` has one entry per `tools/call` this client wrote for the call (so a 2026-07-28 call answered with two
input_required rounds shows three), with the `inputResponses` keys and whether a `requestState` was echoed.
`unsolicited` catches requests a server makes outside any call. Over stdio nothing ties a server request to the call
it serves, so one sent for its own reasons lands in the call then in flight: server-everything asks `roots/list`
350 ms after `initialized` (so a slow first call of a roots-declaring client shows an extra `roots` entry; pass
--no-roots when that matters, or read only the kinds you expect).

  bridge_client.py --mode legacy|auto|2026-07-28 --url URL [--bearer TOKEN] [--header NAME:VALUE ...] [options]
  bridge_client.py --mode ... [options] --stdio -- CMD [ARGS...]          (--stdio and its command come last)

  --call TOOL [--args JSON]   repeatable, made in order; an --args belongs to the --call just before it (none: {})
  --sample-text T             sampling answer: {"role":"assistant","content":{"type":"text","text":T},
                              "model":"bridge-client","stopReason":"endTurn"} (default T: "sampled by bridge-client")
  --elicit-action A           accept (default) | decline | cancel, for form and URL elicitations alike
  --elicit-json JSON          the content of an accepted form elicitation (default: every property of the requested
                              schema filled: its default, else its first enum/const, else by format/type: email
                              bridge@example.com, uri https://example.com/bridge, date 2000-01-01, string "bridge",
                              integer/number 1 (or its minimum if larger), boolean true, array [one such item])
  --roots URI,URI             the roots answer, in that order, file:// URIs only (the SDK's Root type); default
                              file:///bridge/one,file:///bridge/two; "" answers an empty list
  --no-sampling / --no-elicitation / --no-roots
                              leave that callback out: the capability is not declared (initialize, or `_meta`
                              clientCapabilities on 2026-07-28), and the SDK's default answers such a request with
                              error -32600 "... not supported"
  --deadline S                give up after S seconds (default 90): exit 2

Exit 0 once connected (a call's JSON-RPC error is output, not a failure); 1 when connecting failed (exception on
stderr); 2 on the deadline (and on argparse's usage errors); 64 without exactly one of --url / --stdio.
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

import mcp_types as types  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

DEFAULT_ROOTS = "file:///bridge/one,file:///bridge/two"


def error_obj(exc):
    if isinstance(exc, MCPError):
        return {"code": exc.code, "message": exc.message, "data": exc.data}
    return {"code": None, "message": "%s: %s" % (type(exc).__name__, exc), "data": None}


def leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def wire(model):
    return model.model_dump(by_alias=True, mode="json", exclude_none=True) if model is not None else None


class Recorder:
    """Where callbacks and written tools/call rounds go: the call in flight, else `unsolicited`.

    The SDK runs server->client requests in tasks of its own, so the call in flight is tracked here (calls are
    sequential) rather than by a context variable."""

    def __init__(self):
        self.current = None
        self.unsolicited = []

    def callback(self, kind, params):
        entry = {"kind": kind, "params": params}
        (self.current["callbacks"] if self.current is not None else self.unsolicited).append(entry)

    def round(self, params):
        if self.current is None:
            return
        responses = params.get("inputResponses")
        self.current["rounds"].append({
            "inputResponses": sorted(responses) if isinstance(responses, dict) else None,
            "requestState": params.get("requestState") is not None,
        })


class TappedWriteStream:
    """The transport's write stream, recording each tools/call the SDK writes (its retries included)."""

    def __init__(self, inner, recorder):
        self._inner, self._recorder = inner, recorder

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def send(self, item):
        try:
            msg = getattr(item, "message", item)
            msg = getattr(msg, "root", msg)
            if getattr(msg, "method", None) == "tools/call" and getattr(msg, "id", None) is not None:
                params = getattr(msg, "params", None)
                self._recorder.round(params if isinstance(params, dict) else {})
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
async def tapped(transport, recorder):
    async with transport as (read_stream, write_stream):
        yield read_stream, TappedWriteStream(write_stream, recorder)


def fill(prop):
    """A deterministic value for one property of a requested elicitation schema."""
    if "default" in prop:
        return prop["default"]
    if prop.get("enum"):
        return prop["enum"][0]
    for key in ("oneOf", "anyOf"):
        if prop.get(key) and isinstance(prop[key][0], dict) and "const" in prop[key][0]:
            return prop[key][0]["const"]
    kind, fmt = prop.get("type"), prop.get("format")
    if kind == "array":
        return [fill(prop.get("items") or {"type": "string"})]
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return max(1, prop.get("minimum", 1))
    return {"email": "bridge@example.com", "uri": "https://example.com/bridge", "date": "2000-01-01",
            "date-time": "2000-01-01T00:00:00Z"}.get(fmt, "bridge")


def callbacks(opts, recorder):
    """The callback keyword arguments for `Client`, leaving out the switched-off ones."""

    async def sampling(ctx, params):
        recorder.callback("sampling", wire(params))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=opts.sample_text),
            model="bridge-client", stop_reason="endTurn",
        )

    async def elicitation(ctx, params):
        recorder.callback("elicitation", wire(params))
        if opts.elicit_action != "accept" or getattr(params, "mode", "form") == "url":
            return types.ElicitResult(action=opts.elicit_action)
        if opts.elicit_json is not None:
            content = opts.elicit_json
        else:
            props = (params.requested_schema or {}).get("properties") or {}
            content = {name: fill(prop) for name, prop in props.items()}
        return types.ElicitResult(action="accept", content=content)

    async def roots(ctx):
        recorder.callback("roots", None)
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in opts.roots])

    kw = {}
    if not opts.no_sampling:
        kw["sampling_callback"] = sampling
    if not opts.no_elicitation:
        kw["elicitation_callback"] = elicitation
    if not opts.no_roots:
        kw["list_roots_callback"] = roots
    return kw


async def one_call(client, recorder, name, args):
    record = {"call": name, "protocolVersion": client.protocol_version, "callbacks": [], "rounds": []}
    recorder.current = record
    try:
        r = await client.call_tool(name, args)
        blocks = r.content or []
        texts = [b.text for b in blocks if getattr(b, "type", None) == "text"]
        record["result"] = {"isError": bool(r.is_error), "text": texts}
    except Exception as exc:  # noqa: BLE001 - a JSON-RPC error (or a refused round) is an output
        record["error"] = error_obj(exc)
    finally:
        recorder.current = None
    record["unsolicited"] = list(recorder.unsolicited)
    return record


async def run(opts, stdio_cmd):
    recorder, connected = Recorder(), False
    try:
        async with AsyncExitStack() as stack:
            if stdio_cmd is not None:
                transport = stdio_client(
                    StdioServerParameters(command=stdio_cmd[0], args=stdio_cmd[1:], env=dict(os.environ))
                )
            else:
                headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in opts.header)}
                if opts.bearer:
                    headers["Authorization"] = "Bearer %s" % opts.bearer
                http = create_mcp_http_client(headers=headers or None)
                stack.push_async_callback(http.aclose)
                transport = streamable_http_client(opts.url, http_client=http)
            client = Client(tapped(transport, recorder), mode=opts.mode, cache=None, **callbacks(opts, recorder))
            async with client:
                connected = True
                for name, args in opts.calls:
                    line = await one_call(client, recorder, name, args)
                    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
                    sys.stdout.flush()
        return 0
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        label = "error after connecting" if connected else "connection failed"
        sys.stderr.write("bridge_client: %s: %s\n" % (label, "; ".join(map(repr, leaves(exc)))))
        traceback.print_exception(exc, file=sys.stderr)
        return 0 if connected else 1


class CallAction(argparse.Action):
    """--call TOOL: a new call, with no arguments until an --args follows it."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.calls = namespace.calls + [(value, {})]


class ArgsAction(argparse.Action):
    """--args JSON: the arguments of the --call just before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not namespace.calls:
            parser.error("--args must follow a --call")
        try:
            args = json.loads(value)
        except ValueError as exc:
            parser.error("--args: %s" % exc)
        namespace.calls = namespace.calls[:-1] + [(namespace.calls[-1][0], args)]


def main():
    argv = sys.argv[1:]
    stdio_cmd = None
    if "--stdio" in argv:
        i = argv.index("--stdio")
        argv, stdio_cmd = argv[:i], argv[i + 1:]
        if stdio_cmd[:1] == ["--"]:
            stdio_cmd = stdio_cmd[1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", required=True)
    ap.add_argument("--url")
    ap.add_argument("--bearer")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--call", action=CallAction, dest="calls", default=[], metavar="TOOL")
    ap.add_argument("--args", action=ArgsAction, dest="calls", metavar="JSON")
    ap.add_argument("--sample-text", default="sampled by bridge-client")
    ap.add_argument("--elicit-action", choices=["accept", "decline", "cancel"], default="accept")
    ap.add_argument("--elicit-json", type=json.loads)
    ap.add_argument("--roots", default=DEFAULT_ROOTS)
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--no-elicitation", action="store_true")
    ap.add_argument("--no-roots", action="store_true")
    ap.add_argument("--deadline", type=float, default=90.0)
    opts = ap.parse_args(argv)
    if not opts.calls:
        ap.error("at least one --call TOOL is needed")
    if (opts.url is None) == (stdio_cmd is None) or (stdio_cmd is not None and not stdio_cmd):
        sys.stderr.write("bridge_client: need exactly one of --url URL / --stdio -- CMD\n")
        sys.exit(64)
    opts.roots = [u for u in opts.roots.split(",") if u]

    async def bounded():
        try:
            return await asyncio.wait_for(run(opts, stdio_cmd), opts.deadline)
        except asyncio.TimeoutError:
            sys.stderr.write("bridge_client: deadline of %ss ran out\n" % opts.deadline)
            return 2

    sys.exit(asyncio.run(bounded()))


if __name__ == "__main__":
    main()
