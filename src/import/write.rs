//! The text an import writes — `[upstreams.<id>]` tables, secrets file
//! lines, the host's replacement entry — and writing files whole: to a
//! temporary file beside the target, then renamed over it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::convert::{Plan, Upstream};
use super::host::{Host, Piece, Pieces, Transport};

/// `s` as a TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// Pieces as a gateway.toml string: references as `${NAME}`, a literal
/// `$` as `$$` (the gateway's escape), quoted.
pub fn render(pieces: &Pieces) -> String {
    quote(&text(pieces))
}

/// Pieces as the text of a gateway.toml string, unquoted.
pub fn text(pieces: &Pieces) -> String {
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => s.push_str(&t.replace('$', "$$")),
            Piece::Var(name) => {
                s.push_str("${");
                s.push_str(name);
                s.push('}');
            }
        }
    }
    s
}

/// The `[upstreams.<id>]` tables of `plan`, each under a comment naming
/// the server it came from.
pub fn upstreams(plan: &Plan, from: &Path) -> String {
    let mut out = String::new();
    for u in &plan.upstreams {
        out.push_str(&upstream(u, from));
        out.push('\n');
    }
    out
}

fn upstream(u: &Upstream, from: &Path) -> String {
    let name = serde_json::Value::String(u.from.clone());
    let mut t = format!("# {name} from {}\n[upstreams.{}]\n", from.display(), u.id);
    let mut sub = String::new();
    let mut table = |field: &str, map: &std::collections::BTreeMap<String, Pieces>| {
        if !map.is_empty() {
            sub.push_str(&format!("\n[upstreams.{}.{field}]\n", u.id));
            for (k, v) in map {
                sub.push_str(&format!("{} = {}\n", key(k), render(v)));
            }
        }
    };
    match &u.transport {
        Transport::Stdio { command, args, env, cwd } => {
            // `command` and `cwd` are not expanded by the gateway: as is.
            t.push_str(&format!("command = {}\n", quote(command)));
            if !args.is_empty() {
                let args: Vec<String> = args.iter().map(render).collect();
                t.push_str(&format!("args = [{}]\n", args.join(", ")));
            }
            if let Some(cwd) = cwd {
                t.push_str(&format!("cwd = {}\n", quote(&cwd.display().to_string())));
            }
            table("env", env);
        }
        Transport::Http { url, headers, sse } => {
            if *sse {
                t.push_str("transport = \"sse\"\n");
            }
            t.push_str(&format!("url = {}\n", render(url)));
            table("headers", headers);
        }
    }
    if !u.enabled {
        t.push_str("enabled = false\n");
    }
    t.push_str(&sub);
    t
}

/// A secrets file line, `NAME="value"`, escaped so dotenv gives the
/// value back exactly: double quotes with `\\`, `\"`, `\$` (no
/// substitution) and `\n`.
pub fn secret_line(name: &str, value: &str) -> String {
    let mut v = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' => {
                v.push('\\');
                v.push(c);
            }
            '\n' => v.push_str("\\n"),
            c => v.push(c),
        }
    }
    format!("{name}=\"{v}\"\n")
}

/// The entry that replaces the imported servers in the host's file: the
/// gateway over stdio, in the host's own shape.
pub fn host_entry(host: Host, exe: &Path, config: &Path) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let (key, kind) = match host {
        Host::Vscode => ("servers", "\"type\": \"stdio\", "),
        Host::ClaudeCode => ("mcpServers", "\"type\": \"stdio\", "),
        Host::ClaudeDesktop | Host::Cursor => ("mcpServers", ""),
    };
    // Written out rather than serialized: serde_json's map sorts keys, and
    // people read `command` before `args`.
    format!(
        "{{\n  \"{key}\": {{\n    \"gateway\": {{{kind}\"command\": {}, \"args\": [\"stdio\", \"--config\", {}]}}\n  }}\n}}",
        q(&exe.display().to_string()),
        q(&config.display().to_string())
    )
}

/// `text` with `secrets_file = "<file>"` in its `[gateway]` table: the
/// line goes right under the table's header, or a `[gateway]` table is
/// added at the end. The caller parses the result, so a file that defines
/// `gateway` some other way is refused, not damaged.
pub fn with_secrets_file(text: &str, file: &str) -> String {
    let line = format!("secrets_file = {}\n", quote(file));
    let mut out = String::with_capacity(text.len() + line.len() + 16);
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        let header = l.split('#').next().unwrap_or("").trim();
        if !done && header.strip_prefix('[').and_then(|h| h.strip_suffix(']')).is_some_and(|h| h.trim() == "gateway") {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&line);
            done = true;
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n[gateway]\n");
        out.push_str(&line);
    }
    out
}

/// A file written beside its target, not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Writes `text` to `.<target>.import.tmp` with `mode` (the target's
    /// own, when it exists and `mode` is `None`).
    pub fn new(target: &Path, text: &str, mode: Option<u32>) -> std::io::Result<Staged> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = target.with_file_name(format!(".{name}.import.tmp"));
        let mode = mode.or_else(|| std::fs::metadata(target).ok().map(|m| m.permissions().mode() & 0o777));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode.unwrap_or(0o644)).open(&tmp)?;
        // The umask filters the mode on create: a mode asked for (0600) or
        // the target's own is set as it is; a new file keeps the umask's.
        if let Some(mode) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all())?;
        Ok(Staged { tmp, target: target.to_owned() })
    }

    /// The temporary file (to check before it goes in place).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Puts it in place (then `drop` finds no temporary file to remove).
    pub fn commit(self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.target)
    }
}

impl Drop for Staged {
    /// Not committed: nothing is left behind.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secrets;

    #[test]
    fn secret_lines_read_back_exactly() {
        let values =
            ["plain", "with space", "q\"uote's", "dollar $HOME ${X} $$", "back\\slash", "hash # x", "two\nlines", "="];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.env");
        let text: String = values.iter().enumerate().map(|(i, v)| secret_line(&format!("S{i}"), v)).collect();
        std::fs::write(&path, text).unwrap();
        let secrets = Secrets::load(&path).unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(secrets.value(&format!("S{i}")), Some(*v), "S{i}");
        }
    }

    #[test]
    fn strings_render_as_the_gateway_reads_them() {
        let p = vec![Piece::Text("a$b \"c\" ".into()), Piece::Var("X_Y".into())];
        let parsed: toml::Table = toml::from_str(&format!("x = {}", render(&p))).unwrap();
        assert_eq!(parsed["x"].as_str(), Some(r#"a$$b "c" ${X_Y}"#));
        assert_eq!(render(&vec![Piece::Text("plain".into())]), "\"plain\"");
        assert_eq!(key("X-Api-Key"), "X-Api-Key");
        assert_eq!(key("a.b"), "\"a.b\"");
    }

    #[test]
    fn host_entries_are_json_in_each_host_shape() {
        let (exe, config) = (Path::new("/opt/bin/mcp-gateway"), Path::new("/etc/gw \"x\"/gateway.toml"));
        for (host, key, kind) in [
            (Host::Vscode, "servers", Some("stdio")),
            (Host::ClaudeCode, "mcpServers", Some("stdio")),
            (Host::ClaudeDesktop, "mcpServers", None),
            (Host::Cursor, "mcpServers", None),
        ] {
            let v: serde_json::Value = serde_json::from_str(&host_entry(host, exe, config)).unwrap();
            let g = &v[key]["gateway"];
            assert_eq!(g["command"], "/opt/bin/mcp-gateway");
            assert_eq!(g["args"], serde_json::json!(["stdio", "--config", "/etc/gw \"x\"/gateway.toml"]));
            assert_eq!(g["type"].as_str(), kind);
        }
    }

    #[test]
    fn secrets_file_goes_under_the_gateway_table() {
        let t = with_secrets_file("# c\n[gateway] # main\nlisten = \"127.0.0.1:1\"\n", "s.env");
        assert_eq!(t, "# c\n[gateway] # main\nsecrets_file = \"s.env\"\nlisten = \"127.0.0.1:1\"\n");
        let t = with_secrets_file("[upstreams.a]\ncommand = \"x\"", "s.env");
        assert_eq!(t, "[upstreams.a]\ncommand = \"x\"\n\n[gateway]\nsecrets_file = \"s.env\"\n");
    }

    #[test]
    fn staged_files_leave_nothing_behind_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secrets.env");
        let staged = Staged::new(&target, "A=\"1\"\n", Some(0o600)).unwrap();
        assert!(staged.path().exists());
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        Staged::new(&target, "A=\"1\"\n", Some(0o600)).unwrap().commit().unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
