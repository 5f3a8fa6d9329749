//! A throwaway `nats-server -js` on a free loopback port, for tests.

use anyhow::{Context as _, Result, bail};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    store: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
    /// The folder of the configuration file the server was started with.
    conf: Option<tempfile::TempDir>,
}

/// The public key (`U...`) of an nkey seed.
pub fn public_key_of(seed: &str) -> Result<String> {
    Ok(nkeys::KeyPair::from_seed(seed)?.public_key())
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, issued and signed by `issuer`.
fn jwt(
    issuer: &nkeys::KeyPair,
    subject: &nkeys::KeyPair,
    name: &str,
    nats: serde_json::Value,
) -> Result<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = serde_json::json!({
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject.public_key(),
        "nats": nats,
    });
    // The id is a hash of the claims without it, as nats-io/jwt makes it.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(serde_json::to_vec(&claims)?);
    claims["jti"] = hex::encode(digest).into();
    let body = b64.encode(serde_json::to_vec(&claims)?);
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", b64.encode(signature)))
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

    /// One whose only user is an nkey: its seed (`SU...`) is written to
    /// `seed_file`.
    pub fn start_with_nkey_user(seed_file: &Path) -> Result<Self> {
        let user = nkeys::KeyPair::new_user();
        std::fs::write(seed_file, format!("{}\n", user.seed()?))?;
        let conf = format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        );
        Self::start_with_conf(&conf, &[])
    }

    /// One in operator mode (decentralised JWT authentication, the account
    /// preloaded in memory, JetStream enabled for it): a user's credentials
    /// file, as `nsc generate creds` writes it, is written to `creds`.
    pub fn start_in_operator_mode(creds: &Path) -> Result<Self> {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let op_jwt = jwt(
            &operator,
            &operator,
            "evocomp-test-operator",
            serde_json::json!({"type": "operator", "version": 2}),
        )?;
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        });
        let acc_jwt = jwt(
            &operator,
            &account,
            "evocomp-test-account",
            serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
        )?;
        // JetStream in operator mode needs a system account.
        let system = nkeys::KeyPair::new_account();
        let sys_jwt = jwt(
            &operator,
            &system,
            "SYS",
            serde_json::json!({"type": "account", "version": 2}),
        )?;
        let user_jwt = jwt(
            &account,
            &user,
            "evocomp-test-user",
            serde_json::json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        )?;
        std::fs::write(
            creds,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\
                 NKEY Seed printed below can be used to sign and prove identity.\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed()?
            ),
        )?;
        let conf = format!(
            "operator: \"{op_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{sys_jwt}\"\n  {acc}: \"{acc_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = account.public_key()
        );
        Self::start_with_conf(&conf, &[])
    }

    /// One started with the configuration file `conf` (kept beside its store).
    fn start_with_conf(conf: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, conf)?;
        let file = file.to_string_lossy().into_owned();
        let mut args = vec!["-c", file.as_str()];
        args.extend_from_slice(extra);
        let mut s = Self::start_with(&args)?;
        s.conf = Some(dir);
        Ok(s)
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
            conf: None,
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
            .stderr(std::fs::File::create(store.join("nats-server.log"))?)
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
                let log = std::fs::read_to_string(self.store.path().join("nats-server.log"))
                    .unwrap_or_default();
                bail!("nats-server exited at start ({st}): {}", log.trim());
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
