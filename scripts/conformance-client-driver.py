#!/usr/bin/env python3
"""Client command for the MCP conformance suite's CLIENT scenarios: the gateway
as the client under test (its upstream side, including upstream OAuth).

    scripts/conformance-client-driver.py <server-url>

The suite (`conformance client --command "python3 .../conformance-client-driver.py"`)
runs this with the scenario's server URL as the last argument, the scenario
name in MCP_CONFORMANCE_SCENARIO and, for scenarios that hand the client
credentials (pre-registration, client credentials), a JSON object in
MCP_CONFORMANCE_CONTEXT. The driver acts as the gateway's operator and its MCP
client:

1. It POSTs an unauthenticated JSON-RPC `ping` to the URL. A 401 means the
   server wants OAuth; anything else, none.
2. It writes a temporary config with one upstream, `up`, at that URL; with
   OAuth, `[upstreams.up.oauth]` whose grant is `client_credentials` for the
   `auth/client-credentials-*` scenarios and `authorization_code` otherwise;
   a context's client_id / client_secret become the oauth client_id and
   client_secret (the secret through `${CONFORMANCE_CLIENT_SECRET}`).
3. authorization_code: it runs `mcp-gateway auth login up`, takes the URL the
   login prints and GETs it following redirects (the suite's authorization
   server approves at once and redirects to the login's 127.0.0.1 callback),
   and waits for the login to exit 0.
4. It runs `mcp-gateway stdio` and, over stdin/stdout, sends `initialize`,
   `notifications/initialized`, `tools/list` (again, for up to
   CONFORMANCE_DRIVER_LIST_WAIT seconds, default 10, until the upstream's
   `up__*` tools appear), then `tools/call` for each `up__*` tool (arguments
   made from its input schema; `add_numbers` gets {"a": 1, "b": 2}), then
   closes stdin.
5. Operator step-up: when a call fails because the upstream wants more scope
   (the gateway's error names `auth login ... --scope "..."`), the driver does
   what the message says while the gateway keeps running, waits 2 s and calls
   again. If the call is refused again, it restarts the gateway and calls once
   more, to tell a running gateway that kept its old token (reported as a
   failure even when the restarted one succeeds) from a server that will not
   grant the scope. At most CONFORMANCE_DRIVER_RELOGINS re-logins in all
   (default 2; 0 turns this off, so the gateway alone is tested).
6. Operator re-login after an authorization server change (SEP-2352): when
   the gateway says the upstream's authorization server changed and to run
   `auth login` (in its log while the driver waits for the tools, or in a
   call's error), the driver runs it while the gateway keeps running (the
   login registers with the new server), then waits for the tools again or
   calls again. Only for that message: a gateway that lost its token for any
   other reason is not rescued. These re-logins count against
   CONFORMANCE_DRIVER_RELOGINS too.

The gateway's stderr (its log), the login's output and a transcript of the
driver's steps go to this script's stderr, which the suite saves as stderr.txt.

Environment:
  MCP_GATEWAY_BIN                gateway binary (default: <repo>/target/debug/mcp-gateway)
  CONFORMANCE_DRIVER_LIST_WAIT   seconds to wait for the upstream's tools (default 10)
  CONFORMANCE_DRIVER_RELOGINS    operator re-logins for scope step-up (default 2)
  CONFORMANCE_DRIVER_KEEP        1: keep the temporary folder (config, tokens, logs)
  RUST_LOG                       passed to the gateway (default here: info)

Exit status: 0 when the flow finished and every upstream tool call succeeded
(for the `initialize` scenario, whose server has no tools: when it
initialized); 1 when a step failed (the reason is the last line on stderr);
2 on bad usage.

Python 3 standard library only.
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.environ.get("MCP_GATEWAY_BIN") or os.path.join(ROOT, "target", "debug", "mcp-gateway")
SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
LIST_WAIT = float(os.environ.get("CONFORMANCE_DRIVER_LIST_WAIT", "10"))
RELOGINS = int(os.environ.get("CONFORMANCE_DRIVER_RELOGINS", "2"))
UPSTREAM = "up"
PREFIX = UPSTREAM + "__"
START = time.monotonic()


class Failed(Exception):
    """A step failed; the message says which and why."""


def log(msg):
    sys.stderr.write("driver[%6.2fs]: %s\n" % (time.monotonic() - START, msg))
    sys.stderr.flush()


def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


# --- 1. does the server want OAuth? -------------------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wants_oauth(url):
    # The 2026-07-28 scenarios are not auth scenarios, and their servers
    # count every request they see as the client's: no probe of ours.
    if os.environ.get("CONFORMANCE_UPSTREAM_PROTOCOL") == "modern":
        log("probe: skipped (2026-07-28 scenarios need no OAuth)")
        return False
    body = json.dumps({"jsonrpc": "2.0", "id": "driver-probe", "method": "ping"}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    })
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            status, www = resp.status, resp.headers.get("WWW-Authenticate")
    except urllib.error.HTTPError as e:
        status, www = e.code, e.headers.get("WWW-Authenticate")
    except OSError as e:
        raise Failed("probe: POST %s failed: %s" % (url, e))
    log("probe: unauthenticated ping -> HTTP %s%s" % (status, " (WWW-Authenticate: %s)" % www if www else ""))
    return status == 401


# --- 2. the config ---------------------------------------------------------------------


def write_config(workdir, url, oauth, context):
    lines = [
        "[gateway]",
        "token_file = %s" % toml_str(os.path.join(workdir, "tokens.json")),
        "",
        "[upstreams.%s]" % UPSTREAM,
        "url = %s" % toml_str(url),
    ]
    # A server that asks its client things outside any call's stream (the
    # elicitation scenarios ask on the standalone GET stream) needs a
    # connection of the session's own, so the question has one client.
    if SCENARIO.startswith("elicitation"):
        lines.append('isolation = "per-session"')
    # The 2026-07-28 client scenarios (CONFORMANCE_UPSTREAM_PROTOCOL=modern
    # from conformance-client.sh): the gateway speaks that era to the
    # suite's server, as `protocol = "modern"` asks.
    protocol = os.environ.get("CONFORMANCE_UPSTREAM_PROTOCOL")
    if protocol:
        lines.append("protocol = %s" % toml_str(protocol))
    env = {}
    if oauth:
        grant = "client_credentials" if SCENARIO.startswith("auth/client-credentials") else "authorization_code"
        lines += ["", "[upstreams.%s.oauth]" % UPSTREAM, "grant = %s" % toml_str(grant)]
        if context.get("client_id"):
            lines.append("client_id = %s" % toml_str(context["client_id"]))
        if context.get("client_secret"):
            lines.append('client_secret = "${CONFORMANCE_CLIENT_SECRET}"')
            env["CONFORMANCE_CLIENT_SECRET"] = context["client_secret"]
        unused = sorted(set(context) - {"name", "client_id", "client_secret", "toolCalls"})
        if unused:
            log("context keys the gateway's config has no place for: %s" % ", ".join(unused))
    else:
        grant = None
    cfg = os.path.join(workdir, "gateway.toml")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    log("config %s:\n    %s" % (cfg, "\n    ".join(lines)))
    return cfg, grant, env


# --- 3. auth login ---------------------------------------------------------------------


def login(cfg, env, scope=None, timeout=20):
    cmd = [GATEWAY, "auth", "login", UPSTREAM, "--config", cfg, "--timeout", str(timeout)]
    if scope:
        cmd += ["--scope", scope]
    log("run: %s" % " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        # Read the fd itself: select() does not see lines already in a file object's buffer.
        auth_url, seen, buf = None, [], b""
        deadline = time.monotonic() + timeout
        while auth_url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and auth_url is None:
                line, buf = buf.split(b"\n", 1)
                line = line.decode("utf-8", "replace").rstrip()
                seen.append(line)
                if line.startswith("http"):
                    auth_url = line
        if auth_url is None:
            proc.wait(timeout=5)
            rest = (buf + proc.stdout.read() + b"\n" + proc.stderr.read()).decode("utf-8", "replace")
            raise Failed("auth login printed no URL (exit %s): %s" % (
                proc.returncode, " | ".join(l for l in seen + rest.splitlines() if l.strip())))
        seen.append(buf.decode("utf-8", "replace"))
        log("login URL: %s" % auth_url)
        # The browser's part: the authorization server approves at once and redirects to
        # the login's callback, which urllib follows.
        try:
            with urllib.request.urlopen(auth_url, timeout=15) as resp:
                log("browser: %s -> HTTP %s %s" % (resp.geturl(), resp.status, resp.read(200).decode("utf-8", "replace").strip()))
        except urllib.error.HTTPError as e:
            log("browser: %s -> HTTP %s %s" % (e.geturl(), e.code, e.read(300).decode("utf-8", "replace").strip()))
        except OSError as e:
            log("browser: GET failed: %s" % e)
        out, err = (b.decode("utf-8", "replace") for b in proc.communicate(timeout=timeout))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(l for l in seen + out.splitlines() + err.splitlines() if l.strip())
    log("auth login exit %s:\n    %s" % (proc.returncode, text.replace("\n", "\n    ")))
    if proc.returncode != 0:
        last = (err.strip() or out.strip() or "no output").splitlines()[-1]
        raise Failed("auth login failed (exit %s): %s" % (proc.returncode, last))


# --- 4. the gateway over stdio ---------------------------------------------------------


class Gateway:
    def __init__(self, cfg, env, logpath):
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        cmd = [GATEWAY, "stdio", "--config", cfg]
        log("run: %s" % " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.logf, env=env)
        self.buf = b""
        self.next_id = 1

    def send(self, msg):
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method, params=None, timeout=30):
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline, method)
            try:
                m = json.loads(line)
            except ValueError:
                log("gateway stdout (not JSON): %r" % line[:200])
                continue
            if m.get("id") == rid and ("result" in m or "error" in m):
                return m
            if "method" in m and "id" in m:  # a server request, relayed by the gateway
                self.send(answer_server_request(m))
            elif "method" in m:
                log("notification: %s" % m["method"])

    def _line(self, deadline, what):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed("gateway: no answer to %s in time (gateway's last warning: %s)"
                             % (what, self.last_log_line(" WARN ")))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    try:
                        code = self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        code = None
                    raise Failed("gateway: stdout closed (exit %s) while waiting for %s: %s"
                                 % (code, what, self.last_log_line()))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace") if line.strip() else self._line(deadline, what)

    def last_log_line(self, containing=""):
        with open(self.logpath, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f if l.strip() and containing in l]
        return lines[-1] if lines else "(none in the log)"

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log("gateway: still running 10s after stdin closed; killing pid %d" % self.proc.pid)
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
        log("gateway exit %s" % self.proc.returncode)


def answer_server_request(m):
    """The host's answer to a server request the gateway relays: an
    elicitation is accepted with every default its schema gives (SEP-1034:
    the client applies them); anything else is not offered."""
    if m["method"] == "elicitation/create":
        props = ((m.get("params") or {}).get("requestedSchema") or {}).get("properties") or {}
        content = {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}
        log("elicitation/create answered: accept %s" % json.dumps(content))
        return {"jsonrpc": "2.0", "id": m["id"], "result": {"action": "accept", "content": content}}
    log("server request %s refused: the driver offers no such capability" % m["method"])
    return {"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "driver: not supported"}}


def example_args(name, schema):
    if name == "add_numbers":
        return {"a": 1, "b": 2}
    args = {}
    props = (schema or {}).get("properties") or {}
    for key in (schema or {}).get("required") or []:
        t = (props.get(key) or {}).get("type")
        t = t[0] if isinstance(t, list) and t else t
        args[key] = {"number": 1, "integer": 1, "boolean": True, "array": [], "object": {},
                     "null": None}.get(t, "test")
    return args


def call_text(resp):
    if "error" in resp:
        return "JSON-RPC error %s: %s" % (resp["error"].get("code"), resp["error"].get("message"))
    res = resp.get("result") or {}
    return " ".join(c.get("text", "") for c in res.get("content") or [] if c.get("type") == "text")


STEP_UP = re.compile(r'auth login\s+\S+.*?--scope\s+(?:"([^"]*)"|\'([^\']*)\'|(\S+))')
# The gateway's word that the upstream's authorization server changed and a
# new login is needed (its log's warning, or a call's error).
MOVED = re.compile(r"authorization server changed.*auth login %s`" % re.escape(UPSTREAM))


class Run:
    """The gateway runs of one scenario and the operator's re-logins."""

    def __init__(self, cfg, env, workdir, grant):
        self.cfg, self.env, self.workdir, self.grant = cfg, env, workdir, grant
        self.runs, self.relogins, self.gw, self.moved_run = 0, 0, None, None

    def start(self):
        """Starts the gateway, initializes, and returns the upstream's tools."""
        self.stop()
        self.runs += 1
        self.gw = Gateway(self.cfg, self.env, os.path.join(self.workdir, "gateway-%d.log" % self.runs))
        init = self.gw.request("initialize", {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {"form": {}}},
            "clientInfo": {"name": "conformance-client-driver", "version": "1.0.0"},
        })
        if "error" in init:
            raise Failed("initialize: %s" % call_text(init))
        log("initialize: %s" % json.dumps(init["result"].get("serverInfo")))
        self.gw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        deadline = time.monotonic() + LIST_WAIT
        while True:
            lst = self.gw.request("tools/list", {})
            if "error" in lst:
                raise Failed("tools/list: %s" % call_text(lst))
            tools = [t for t in lst["result"].get("tools", []) if t.get("name", "").startswith(PREFIX)]
            # The `initialize` scenario's server has no tools: one list is enough.
            if tools or SCENARIO == "initialize" or time.monotonic() >= deadline:
                break
            if self.relogin_if_moved(self.gw.last_log_line(" WARN ")):
                deadline = time.monotonic() + LIST_WAIT
            time.sleep(0.5)
        log("tools/list: %s" % [t["name"] for t in lst["result"].get("tools", [])])
        return tools

    def stop(self):
        if self.gw is not None:
            gw, self.gw = self.gw, None
            gw.close()
            with open(gw.logpath, encoding="utf-8", errors="replace") as f:
                sys.stderr.write("----- gateway stderr (run %d) -----\n%s----- end -----\n" % (self.runs, f.read()))

    def call(self, tool):
        """Calls a tool: (ok, text, the scope the gateway says to log in with, or None)."""
        args = tool["arguments"] if "arguments" in tool else example_args(tool["name"][len(PREFIX):], tool.get("inputSchema"))
        resp = self.gw.request("tools/call", {"name": tool["name"], "arguments": args})
        text = call_text(resp)
        failed = "error" in resp or bool((resp.get("result") or {}).get("isError"))
        log("tools/call %s %s -> %s%s" % (tool["name"], json.dumps(args), "ERROR " if failed else "", text[:500]))
        m = STEP_UP.search(text) if failed else None
        return not failed, text, (next(g for g in m.groups() if g is not None) if m else None)

    def relogin_if_moved(self, said):
        """When `said` (a log line or an error) is the gateway's word that the upstream's
        authorization server changed, does the login it asks for (once per run of the
        gateway, within CONFORMANCE_DRIVER_RELOGINS). Whether it logged in."""
        if not MOVED.search(said) or self.grant != "authorization_code" or self.moved_run == self.runs \
                or self.relogins >= RELOGINS:
            return False
        self.relogins += 1
        self.moved_run = self.runs
        log("operator re-login %d: the gateway says the authorization server changed (%s); running `auth login`"
            % (self.relogins, said[:300]))
        login(self.cfg, self.env)
        time.sleep(2)  # the gateway notices the token file within a second (README)
        return True

    def call_with_step_up(self, tool):
        """Calls a tool; when the gateway asks for a login with more scope, does it (while
        the gateway runs), waits for the gateway to notice the token file and calls again;
        if the call is refused again, restarts the gateway to tell a stale token from a
        server that will not grant the scope. Returns the problems found."""
        ok, text, scope = self.call(tool)
        if not ok and self.relogin_if_moved(text):
            ok, text, scope = self.call(tool)
        while not ok and scope and self.grant == "authorization_code" and self.relogins < RELOGINS:
            self.relogins += 1
            log("operator step-up %d: running `auth login --scope %s`, as the gateway says" % (self.relogins, scope))
            login(self.cfg, self.env, scope=scope)
            time.sleep(2)  # the gateway notices the token file within a second (README)
            ok, text, again = self.call(tool)
            if ok or not again:
                scope = again
                continue
            log("the running gateway still lacks scope %r after the login; restarting it" % again)
            tools = {t["name"]: t for t in self.start()}
            if tool["name"] not in tools:
                return ["after the re-login the restarted gateway no longer lists %s" % tool["name"]]
            ok, text, scope = self.call(tools[tool["name"]])
            if ok:
                return ["after `auth login --scope %s` the running gateway still called %s with its old token "
                        "(403 insufficient_scope again); only a restarted gateway used the new one" % (again, tool["name"])]
        if ok:
            return []
        if scope and self.grant == "authorization_code":
            return ["tools/call %s still wants scope %r after %d re-login(s): %s" % (tool["name"], scope, self.relogins, text[:300])]
        return ["tools/call %s failed: %s" % (tool["name"], text[:300])]


def main():
    # The suite SIGTERMs a client that outlives its timeout: unwind, so the
    # finally blocks stop the gateway processes this driver started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.stderr.write("usage: scripts/conformance-client-driver.py <server-url> (see its header)\n")
        return 2
    url = sys.argv[1]
    if not os.access(GATEWAY, os.X_OK):
        log("%s is not an executable (set MCP_GATEWAY_BIN)" % GATEWAY)
        return 1
    try:
        context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    except ValueError:
        context = {}
    log("scenario %r, url %s, context keys %s" % (SCENARIO, url, sorted(context)))
    workdir = tempfile.mkdtemp(prefix="conformance-client.")
    run = None
    try:
        oauth = wants_oauth(url)
        cfg, grant, extra_env = write_config(workdir, url, oauth, context)
        env = dict(os.environ, **extra_env)
        env.setdefault("RUST_LOG", "info")
        env.pop("MCP_GATEWAY_CONFIG", None)
        if grant == "authorization_code":
            login(cfg, env)
        run = Run(cfg, env, workdir, grant)
        tools = run.start()
        if not tools and SCENARIO != "initialize":  # that scenario's server has no tools
            raise Failed("tools/list: no %s* tools after %ss: the upstream did not connect (see the gateway's log)"
                         % (PREFIX, LIST_WAIT))
        problems = []
        # A scenario that names the calls to make (context `toolCalls`: the
        # 2026-07-28 header scenarios) gets exactly those, with its
        # arguments, each under the gateway's name for the tool.
        calls = context.get("toolCalls") or []
        by_name = {t["name"]: t for t in tools}
        for c in calls:
            tool = by_name.get(PREFIX + c.get("name", ""))
            if tool is None:
                problems.append("tools/list has no %s%s for the scenario's call" % (PREFIX, c.get("name")))
                continue
            problems += run.call_with_step_up(dict(tool, arguments=c.get("arguments", {})))
        # json-schema-2020-12-preservation: the echo tool gets the focal
        # tool's inputSchema as the gateway listed it (what a client would
        # hand its model), so the suite sees what survived the gateway.
        focal = next((t for t in tools if "$schema" in (t.get("inputSchema") or {})), None)
        for tool in tools if not calls else []:
            props = (tool.get("inputSchema") or {}).get("properties") or {}
            if SCENARIO.startswith("json-schema-2020-12") and focal and tool is not focal and "schema" in props:
                tool = dict(tool, arguments={"schema": focal["inputSchema"]})
            problems += run.call_with_step_up(tool)
        run.stop()
        if problems:
            raise Failed("; ".join(problems))
        verdict = "PASS"
    except (Failed, subprocess.TimeoutExpired) as e:
        verdict = "FAIL: %s" % e
    finally:
        if run is not None:
            run.stop()
        if os.environ.get("CONFORMANCE_DRIVER_KEEP") == "1":
            log("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(verdict)  # the last line: the runner reads the verdict there
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
