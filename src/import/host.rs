//! An agent host's MCP config file read into [`HostFile`]: which host wrote
//! it, its servers, and the variables in their strings made into
//! [`Piece`]s (text, or a `${NAME}` reference the gateway resolves).
//!
//! The four hosts share one shape (`mcpServers`, or `servers` for VS Code)
//! and differ in their variables: Claude Desktop expands none, Claude Code
//! has `${VAR}` and `${VAR:-default}`, Cursor and VS Code `${env:VAR}`,
//! `${userHome}` and `${workspaceFolder}`, VS Code `${input:id}`. Every
//! syntax but Claude Desktop's is read in every file: none of them means
//! something else in another host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Env;
use serde_json::{Map, Value};

use super::ReadError;

/// The agent host that wrote the file: it decides the variables read and
/// the shape of the entry printed to replace the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// `claude_desktop_config.json`.
    ClaudeDesktop,
    /// `.mcp.json` (or `~/.claude.json`).
    ClaudeCode,
    /// `~/.cursor/mcp.json` or `.cursor/mcp.json`.
    Cursor,
    /// `.vscode/mcp.json` (`servers`, `inputs`).
    Vscode,
}

/// A piece of a host string once its variables are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (a `$` in it is written `$$` in gateway.toml).
    Text(String),
    /// `${NAME}`: the secrets file, then the gateway's environment.
    Var(String),
}

/// A string as pieces, adjacent texts joined.
pub type Pieces = Vec<Piece>;

/// How the gateway reaches a server.
#[derive(Debug)]
pub enum Transport {
    /// A command the gateway starts.
    Stdio {
        /// The program (the gateway does not expand `command`: a variable
        /// in it is resolved at import).
        command: String,
        /// Its arguments.
        args: Vec<Pieces>,
        /// Extra environment (`envFile`'s entries under `env`'s).
        env: BTreeMap<String, Pieces>,
        /// Working directory, absolute (for a project's file, the project).
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP (`sse`: legacy HTTP+SSE).
    Http {
        /// The endpoint.
        url: Pieces,
        /// Static headers.
        headers: BTreeMap<String, Pieces>,
        /// `type: "sse"`.
        sse: bool,
    },
}

/// One server of the host's file.
#[derive(Debug)]
pub struct HostServer {
    /// Its name in the host's file.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// `"disabled": true`.
    pub disabled: bool,
    /// Keys the gateway has no place for (`sandbox`, `dev`, `oauth`, …).
    pub ignored: Vec<String>,
}

/// A host file, read.
#[derive(Debug)]
pub struct HostFile {
    /// Which host.
    pub host: Host,
    /// The file, absolute.
    pub path: PathBuf,
    /// Its servers, by name (the file's order is not kept: serde_json's map
    /// is sorted, which keeps ids and secret names deterministic).
    pub servers: Vec<HostServer>,
    /// Servers that are the gateway itself (`mcp-gateway …`), left out.
    pub skipped: Vec<String>,
    /// `${input:id}` references: the gateway name they became → the
    /// input's description (VS Code prompts for them; the user fills them
    /// in the secrets file instead).
    pub inputs: BTreeMap<String, String>,
}

/// The keys of a server entry that are read; others are reported.
const KNOWN: [&str; 9] = ["type", "command", "args", "env", "envFile", "cwd", "url", "headers", "disabled"];

// === impl Host ===

impl Host {
    /// The host a file is from: VS Code by its `servers` object, the others
    /// by the file's name and folder; Claude Code's syntax otherwise (the
    /// widest of the `mcpServers` hosts).
    pub fn detect(path: &Path, top: &Map<String, Value>) -> Host {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let folder = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("");
        if top.contains_key("servers") && !top.contains_key("mcpServers") {
            Host::Vscode
        } else if name == "claude_desktop_config.json" {
            Host::ClaudeDesktop
        } else if folder == ".cursor" {
            Host::Cursor
        } else {
            Host::ClaudeCode
        }
    }

    /// The key that holds the servers.
    pub fn servers_key(self) -> &'static str {
        if self == Host::Vscode { "servers" } else { "mcpServers" }
    }

    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Host::ClaudeDesktop => "Claude Desktop",
            Host::ClaudeCode => "Claude Code",
            Host::Cursor => "Cursor",
            Host::Vscode => "VS Code",
        }
    }
}

// === impl HostFile ===

impl HostFile {
    /// Reads `path` (JSON, with the comments and trailing commas VS Code
    /// allows), as `host` or the host it looks like.
    pub fn read(path: &Path, host: Option<Host>, env: &dyn Env) -> Result<HostFile, ReadError> {
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let shape = |what: String| ReadError::Shape { path: path.to_owned(), what };
        let text = std::fs::read_to_string(path).map_err(|error| ReadError::Read { path: path.to_owned(), error })?;
        let value: Value = serde_json::from_str(&strip_jsonc(&text))
            .map_err(|error| ReadError::NotJson { path: path.to_owned(), error })?;
        let Value::Object(top) = value else { return Err(shape("the top level is not a JSON object".into())) };
        let host = host.unwrap_or_else(|| Host::detect(path, &top));
        let key = host.servers_key();
        let servers = match top.get(key) {
            Some(Value::Object(servers)) => servers,
            Some(_) => return Err(shape(format!("`{key}` is not an object of servers"))),
            None => {
                return Err(shape(format!("no `{key}` object: not a {} MCP config (or pass --host)", host.label())));
            }
        };
        let declared = inputs(top.get("inputs"));
        let mut vars = Vars { host, env, workspace: workspace(path), declared, used: BTreeMap::new() };
        let mut file =
            HostFile { host, path: path.clone(), servers: Vec::new(), skipped: Vec::new(), inputs: BTreeMap::new() };
        for (name, entry) in servers {
            let server = vars.server(name, entry).map_err(|what| ReadError::Server {
                path: path.clone(),
                server: name.clone(),
                what,
            })?;
            if is_gateway(&server) {
                file.skipped.push(name.clone());
            } else {
                file.servers.push(server);
            }
        }
        if file.servers.is_empty() {
            return Err(shape(format!("no servers to import under `{key}`")));
        }
        file.inputs = vars.used;
        Ok(file)
    }
}

/// Whether a server runs the gateway itself (its entry from an earlier
/// import): importing it would make the gateway its own upstream.
fn is_gateway(server: &HostServer) -> bool {
    let Transport::Stdio { command, .. } = &server.transport else { return false };
    Path::new(command).file_name().is_some_and(|n| n == "mcp-gateway")
}

/// The folder `${workspaceFolder}` and relative paths mean: the project a
/// `.vscode/` or `.cursor/` folder is in, else the file's own folder.
pub(super) fn workspace(path: &Path) -> PathBuf {
    let folder = path.parent().unwrap_or(Path::new("/"));
    match folder.file_name().and_then(|n| n.to_str()) {
        Some(".vscode" | ".cursor") => folder.parent().unwrap_or(folder).to_path_buf(),
        _ => folder.to_path_buf(),
    }
}

/// VS Code's `inputs`: id → description.
fn inputs(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Array(items)) = v else { return BTreeMap::new() };
    items
        .iter()
        .filter_map(|i| {
            let id = i.get("id")?.as_str()?;
            Some((id.to_owned(), i.get("description").and_then(Value::as_str).unwrap_or("").to_owned()))
        })
        .collect()
}

/// Reading one server's strings.
struct Vars<'a> {
    host: Host,
    env: &'a dyn Env,
    workspace: PathBuf,
    declared: BTreeMap<String, String>,
    used: BTreeMap<String, String>,
}

impl Vars<'_> {
    fn server(&mut self, name: &str, entry: &Value) -> Result<HostServer, String> {
        let Value::Object(o) = entry else { return Err("not a JSON object".into()) };
        let ignored = o.keys().filter(|k| !KNOWN.contains(&k.as_str())).cloned().collect();
        let disabled = o.get("disabled").and_then(Value::as_bool).unwrap_or(false);
        let kind = match o.get("type") {
            None => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => return Err("`type` is not a string".into()),
        };
        let transport = match (kind, o.get("command"), o.get("url")) {
            (_, Some(_), Some(_)) => return Err("both `command` and `url` are set".into()),
            (None | Some("stdio"), Some(command), None) => self.stdio(o, command)?,
            (None | Some("http" | "streamable-http" | "streamableHttp" | "sse"), None, Some(url)) => {
                self.http(o, url, kind == Some("sse"))?
            }
            (None, None, None) => return Err("neither `command` (stdio) nor `url` (HTTP) is set".into()),
            (Some(t @ ("stdio" | "http" | "streamable-http" | "streamableHttp" | "sse")), _, _) => {
                return Err(format!(
                    "`type` is {t:?} but {} is missing",
                    if t == "stdio" { "`command`" } else { "`url`" }
                ));
            }
            (Some(t), _, _) => return Err(format!("unknown `type` {t:?} (stdio, http or sse)")),
        };
        Ok(HostServer { name: name.to_owned(), transport, disabled, ignored })
    }

    fn stdio(&mut self, o: &Map<String, Value>, command: &Value) -> Result<Transport, String> {
        let command = self.pieces(string(command, "command")?, "command")?;
        let command = self.resolved(command, "command")?;
        let args = match o.get("args") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| self.pieces(&scalar(v, &format!("args[{i}]"))?, &format!("args[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`args` is not an array".into()),
        };
        let mut env = BTreeMap::new();
        if let Some(file) = o.get("envFile") {
            let file = self.path(string(file, "envFile")?, "envFile")?;
            let iter = dotenvy::from_path_iter(&file).map_err(|e| format!("envFile {}: {e}", file.display()))?;
            for item in iter {
                // dotenvy's error quotes the line, which may hold a secret.
                let (k, v) = item.map_err(|_| format!("envFile {}: an entry is not NAME=value", file.display()))?;
                env.insert(k, vec![Piece::Text(v)]);
            }
        }
        env.extend(self.map(o.get("env"), "env")?);
        // A project's file (Claude Code, Cursor, VS Code) starts servers in
        // the project, where their relative paths point; the gateway would
        // start them beside its own config. Claude Desktop gives no folder.
        let cwd = match o.get("cwd") {
            Some(c) => Some(self.path(string(c, "cwd")?, "cwd")?),
            None if self.host != Host::ClaudeDesktop => Some(self.workspace.clone()),
            None => None,
        };
        Ok(Transport::Stdio { command, args, env, cwd })
    }

    fn http(&mut self, o: &Map<String, Value>, url: &Value, sse: bool) -> Result<Transport, String> {
        let url = self.pieces(string(url, "url")?, "url")?;
        Ok(Transport::Http { url, headers: self.map(o.get("headers"), "headers")?, sse })
    }

    fn map(&mut self, v: Option<&Value>, field: &str) -> Result<BTreeMap<String, Pieces>, String> {
        match v {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let at = format!("{field}.{k}");
                    Ok((k.clone(), self.pieces(&scalar(v, &at)?, &at)?))
                })
                .collect(),
            Some(_) => Err(format!("`{field}` is not an object")),
        }
    }

    /// A path field (`cwd`, `envFile`): its variables expanded here, made
    /// absolute against the workspace, so the gateway's config can sit
    /// anywhere.
    fn path(&mut self, s: &str, at: &str) -> Result<PathBuf, String> {
        let pieces = self.pieces(s, at)?;
        let [Piece::Text(p)] = pieces.as_slice() else {
            return Err(format!("`{at}` uses an environment variable; write the path out"));
        };
        Ok(self.workspace.join(p))
    }

    /// Pieces made text now, from the environment: for what the gateway
    /// does not expand (`command`).
    fn resolved(&self, pieces: Pieces, at: &str) -> Result<String, String> {
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Text(t) => out.push_str(&t),
                Piece::Var(name) => match self.env.var(&name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(format!(
                            "`{at}` uses `${{{name}}}`, which is not set (the gateway does not expand `{at}`)"
                        ));
                    }
                },
            }
        }
        Ok(out)
    }

    /// `s` with its variables read.
    fn pieces(&mut self, s: &str, at: &str) -> Result<Pieces, String> {
        if self.host == Host::ClaudeDesktop {
            return Ok(join(vec![Piece::Text(s.to_owned())]));
        }
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(pos) = rest.find("${") {
            out.push(Piece::Text(rest[..pos].to_owned()));
            let body = &rest[pos + 2..];
            let end = closing(body).ok_or_else(|| format!("`{at}`: `${{` without its `}}`"))?;
            out.extend(self.variable(&body[..end], at)?);
            rest = &body[end + 1..];
        }
        out.push(Piece::Text(rest.to_owned()));
        Ok(join(out))
    }

    /// One `${…}`'s body.
    fn variable(&mut self, body: &str, at: &str) -> Result<Pieces, String> {
        let var = |name: &str| {
            if valid_name(name) {
                Ok(vec![Piece::Var(name.to_owned())])
            } else {
                Err(format!("`{at}`: `{name}` is not an environment variable name the gateway can use ([A-Za-z0-9_]+)"))
            }
        };
        if let Some(name) = body.strip_prefix("env:") {
            return var(name);
        }
        if let Some(id) = body.strip_prefix("input:") {
            let name = format!("INPUT_{}", super::creds::upper_words(id));
            let description = self.declared.get(id).cloned().unwrap_or_default();
            self.used.insert(name.clone(), if description.is_empty() { format!("input `{id}`") } else { description });
            return Ok(vec![Piece::Var(name)]);
        }
        let text = |t: String| Ok(vec![Piece::Text(t)]);
        match body {
            "userHome" => return text(self.env.var("HOME").ok_or("`${userHome}`: HOME is not set")?),
            "workspaceFolder" => return text(self.workspace.display().to_string()),
            "workspaceFolderBasename" => {
                return text(self.workspace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            "pathSeparator" | "/" => return text("/".to_owned()),
            _ => {}
        }
        if let Some((name, default)) = body.split_once(":-") {
            // As the shell's `:-`: the default when unset or empty. A set
            // variable stays a reference the gateway resolves when it runs.
            return match self.env.var(name) {
                Some(v) if !v.is_empty() => var(name),
                _ => self.pieces(default, at),
            };
        }
        if valid_name(body) {
            return var(body);
        }
        Err(format!("`{at}`: unsupported variable `${{{body}}}`"))
    }
}

/// Where the `}` closing a `${` is in `body` (nested `${…}` skipped).
fn closing(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// A name the gateway's `${NAME}` accepts.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Adjacent texts joined, empty ones dropped.
pub(super) fn join(pieces: Pieces) -> Pieces {
    let mut out: Pieces = Vec::new();
    for p in pieces {
        match (out.last_mut(), p) {
            (_, Piece::Text(t)) if t.is_empty() => {}
            (Some(Piece::Text(last)), Piece::Text(t)) => last.push_str(&t),
            (_, p) => out.push(p),
        }
    }
    out
}

fn string<'v>(v: &'v Value, field: &str) -> Result<&'v str, String> {
    v.as_str().ok_or_else(|| format!("`{field}` is not a string"))
}

/// A string, or a number or boolean as its text (VS Code's `env` allows them).
fn scalar(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("`{field}` is not a string")),
    }
}

/// JSON with comments (`//`, `/* */`) and trailing commas made plain JSON,
/// as VS Code's and Cursor's files may have them. Comments become spaces,
/// so serde's line and column still point into the file.
fn strip_jsonc(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
            out.push(c);
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.extend(b[i..end].iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
            i = end;
            continue;
        } else if c == b',' {
            let next = b[i + 1..].iter().position(|c| !c.is_ascii_whitespace()).map(|p| b[i + 1 + p]);
            out.push(if matches!(next, Some(b'}' | b']')) { b' ' } else { c });
        } else {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(host: Host, env: &BTreeMap<String, String>) -> Vars<'_> {
        let declared = [("api-key".to_owned(), "The API key".to_owned())].into();
        Vars { host, env, workspace: PathBuf::from("/proj"), declared, used: BTreeMap::new() }
    }

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_owned())
    }

    fn var(s: &str) -> Piece {
        Piece::Var(s.to_owned())
    }

    #[test]
    fn variables_of_each_host() {
        let env: BTreeMap<String, String> =
            [("SET", "1"), ("EMPTY", ""), ("HOME", "/home/u")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        let mut v = vars(Host::Vscode, &env);
        let mut p = |s: &str| v.pieces(s, "x").unwrap();
        assert_eq!(p("a ${VAR} b"), [text("a "), var("VAR"), text(" b")]);
        assert_eq!(p("${env:TOKEN}"), [var("TOKEN")]);
        assert_eq!(p("${SET:-d}"), [var("SET")]);
        assert_eq!(p("${UNSET:-http://h:1/x}/mcp"), [text("http://h:1/x/mcp")]);
        assert_eq!(p("${EMPTY:-d}"), [text("d")]);
        assert_eq!(p("${UNSET:-${env:OTHER}}"), [var("OTHER")]);
        assert_eq!(p("${userHome}${/}x ${workspaceFolder} ${workspaceFolderBasename}"), [text("/home/u/x /proj proj")]);
        assert_eq!(p("Bearer ${input:api-key}"), [text("Bearer "), var("INPUT_API_KEY")]);
        assert_eq!(p("$5 and $HOME"), [text("$5 and $HOME")]);
        assert_eq!(v.used["INPUT_API_KEY"], "The API key");
        for bad in ["${command:pick}", "${A-B}", "${open"] {
            assert!(v.pieces(bad, "x").is_err(), "{bad}");
        }
        // Claude Desktop expands nothing.
        assert_eq!(vars(Host::ClaudeDesktop, &env).pieces("${SET}", "x").unwrap(), [text("${SET}")]);
    }

    #[test]
    fn comments_and_trailing_commas() {
        let jsonc = "{\n  // a comment \"with quotes\"\n  \"a\": \"http://x//y\", /* block\n */ \"b\": [1, 2,],\n}";
        let v: Value = serde_json::from_str(&strip_jsonc(jsonc)).unwrap();
        assert_eq!(v, serde_json::json!({"a": "http://x//y", "b": [1, 2]}));
    }

    #[test]
    fn hosts_by_name_and_shape() {
        let m = |k: &str| -> Map<String, Value> { [(k.to_owned(), Value::Null)].into_iter().collect() };
        assert_eq!(Host::detect(Path::new("/p/.vscode/mcp.json"), &m("servers")), Host::Vscode);
        assert_eq!(Host::detect(Path::new("/c/claude_desktop_config.json"), &m("mcpServers")), Host::ClaudeDesktop);
        assert_eq!(Host::detect(Path::new("/h/.cursor/mcp.json"), &m("mcpServers")), Host::Cursor);
        assert_eq!(Host::detect(Path::new("/p/.mcp.json"), &m("mcpServers")), Host::ClaudeCode);
        assert_eq!(workspace(Path::new("/p/.vscode/mcp.json")), Path::new("/p"));
        assert_eq!(workspace(Path::new("/p/.mcp.json")), Path::new("/p"));
    }
}
