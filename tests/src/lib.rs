//! Helpers of the end-to-end tests: start the real `lrid serve` on 127.0.0.1:0 and talk to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The profile folder the running test or bench was built into (`target/release`, or the same
/// under `CARGO_TARGET_DIR`): the executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

/// The release `lrid` built beside these tests (or `$LRID_BIN`); `make test` builds it first.
pub fn lrid_bin() -> PathBuf {
    let path = std::env::var_os("LRID_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("lrid"));
    assert!(
        path.exists(),
        "{} does not exist: build it first (cargo build --release -p lrid)",
        path.display()
    );
    path
}

/// An example program built beside these tests (`cargo test` builds the workspace's examples).
pub fn example_bin(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} does not exist: build it first (cargo build --release --workspace --examples)",
        path.display()
    );
    path
}

/// A plugin library (`lib{name}.so`) built by the workspace beside these tests.
pub fn plugin_lib(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} does not exist: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// A running `lrid serve`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The `--token` it was started with, which `sql` then sends.
    pub token: Option<String>,
}

impl Daemon {
    /// Starts a daemon on a free loopback port with its data in `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts a daemon listening on `listen` with its data in `data_dir`.
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        let mut child = Command::new(lrid_bin())
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lrid serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address line");
        let addr = line
            .split_whitespace()
            .nth(4)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| extra.get(i + 1))
            .map(|t| t.to_string());
        Daemon {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            token,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for lrid serve")
    }

    /// `lrid sql QUERY --format json` against this daemon: the rows.
    pub fn sql(&self, query: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut sql = Command::new(lrid_bin());
        sql.args(["sql", query, "--format", "json", "--server", &self.url()]);
        if let Some(t) = &self.token {
            sql.args(["--token", t]);
        }
        let out = sql.output().expect("run lrid sql");
        assert!(
            out.status.success(),
            "lrid sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json rows");
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r.as_object().expect("row").clone())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
