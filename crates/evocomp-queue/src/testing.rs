//! A throwaway `nats-server -js` on a free loopback port, for tests.

use anyhow::{Context as _, Result, bail};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    store: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
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
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(port, store.path(), &extra)?;
        let mut s = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            port,
            extra,
        };
        s.wait_listening()?;
        Ok(s)
    }

    fn spawn(port: u16, store: &std::path::Path, extra: &[String]) -> Result<Child> {
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting nats-server (install it: `apt-get install nats-server`, \
                 as scripts/setup.sh does)",
            )
    }

    /// Kill the server and start it again on the same port and store (its
    /// streams and durable consumers kept, its clients disconnected),
    /// after `down` without one.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(self.port, self.store.path(), &self.extra)?;
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> Result<()> {
        let port = self.port;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = self.child.try_wait()? {
                bail!("nats-server exited at start ({st})");
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("nats-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
