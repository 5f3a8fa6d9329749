//! A throwaway `nats-server -js` on a free loopback port, for tests.

use anyhow::{Context as _, Result, bail};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Start one; `nats-server` must be on PATH (scripts/setup.sh installs
    /// Debian's package).
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// One whose clients must log in as `user` with `password`; `url` has
    /// no credentials in it.
    pub fn start_with_user(user: &str, password: &str) -> Result<Self> {
        Self::start_with(&["--user", user, "--pass", password])
    }

    fn start_with(extra: &[&str]) -> Result<Self> {
        let store = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting nats-server (install it: `apt-get install nats-server`, \
                 as scripts/setup.sh does)",
            )?;
        let mut s = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = s.child.try_wait()? {
                bail!("nats-server exited at start ({st})");
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("nats-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
