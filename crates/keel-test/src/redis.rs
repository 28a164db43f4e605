//! A private `redis-server` for tests, on a free loopback port, killed on drop. Tests that stop
//! or restart Redis use their own so they never disturb anything else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    /// Certificates of a server that speaks TLS only.
    tls: Option<RedisTls>,
}

/// The certificates of a TLS `redis-server`: a throwaway CA, the server's certificate for
/// `127.0.0.1` signed by it, and a client certificate signed by it.
pub struct RedisTls {
    dir: tempfile::TempDir,
}

impl RedisTls {
    /// Makes the certificates with the `openssl` command.
    ///
    /// # Panics
    /// If `openssl` is missing or fails.
    fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl (install the openssl package): {e}")
                });
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=keel test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat());
        for (name, usage) in [("redis", "serverAuth"), ("client", "clientAuth")] {
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat());
            std::fs::write(
                dir.path().join(&ext),
                format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"),
            )
            .expect("write extensions");
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Self { dir }
    }

    /// A file of the set: `ca.crt`, `redis.crt`, `redis.key`, `client.crt`, `client.key`.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) on a free port and waits until it answers PING.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not come up within 10 s.
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match spawn_on(addr, None, &[]) {
                Ok(child) => {
                    return Self {
                        child,
                        addr,
                        tls: None,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Starts `redis-server` speaking TLS only (with certificates made for it, see
    /// [`RedisServer::tls`]), requiring client certificates when `mutual`, and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// If `redis-server` or `openssl` is missing, or the server does not come up within 10 s.
    pub fn start_tls(mutual: bool) -> Self {
        let tls = RedisTls::generate();
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match spawn_on(addr, Some((&tls, mutual)), &[]) {
                Ok(child) => {
                    return Self {
                        child,
                        addr,
                        tls: Some(tls),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server (TLS) did not start: {last_error}");
    }

    /// Starts a `redis-server` replicating `master`, and waits until it answers PING.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn start_replica_of(master: &RedisServer) -> Self {
        let extra = [
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.addr.port().to_string(),
        ];
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = spawn_on(addr, None, &extra)
            .unwrap_or_else(|e| panic!("redis-server (replica) did not start: {e}"));
        Self {
            child,
            addr,
            tls: None,
        }
    }

    /// The certificates of a server started with [`RedisServer::start_tls`].
    pub fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_ref()
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/0", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server (as `kill -9` would: nothing is saved). [`RedisServer::restart`] brings
    /// it back on the same port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, empty, and waits until it answers PING.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn restart(&mut self) {
        self.kill();
        // A restarted TLS server asks for client certificates only if the first one did not
        // (restarts are for plain servers in practice; keep the first one's settings simple).
        let tls = self.tls.as_ref().map(|t| (t, false));
        self.child =
            spawn_on(self.addr, tls, &[]).unwrap_or_else(|e| panic!("redis-server restart: {e}"));
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers, as with a
    /// Redis stalled by a slow command or a paused VM.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {which} failed");
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) monitoring one master as `mymaster`, with a
/// quorum of one and short timeouts; killed on drop.
pub struct RedisSentinel {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// The name the master is monitored under.
    pub const MASTER: &'static str = "mymaster";

    /// Starts a Sentinel monitoring `master` and waits until it answers PING.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn start(master: &RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n",
                port = addr.port(),
                dir = dir.path().display(),
                name = Self::MASTER,
                master = master.addr.port(),
            ),
        )
        .expect("write sentinel.conf");
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server --sentinel: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(addr) {
            assert!(Instant::now() < deadline, "redis sentinel did not start");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis sentinel exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redis-server` on `addr` and waits until it answers PING (or, speaking TLS, accepts
/// connections).
pub(crate) fn spawn_on(
    addr: SocketAddr,
    tls: Option<(&RedisTls, bool)>,
    extra: &[String],
) -> Result<Child, String> {
    let port = addr.port().to_string();
    let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .map(str::to_owned)
        .to_vec();
    match tls {
        None => args.extend(["--port".to_owned(), port]),
        Some((tls, mutual)) => {
            let file = |name: &str| tls.path(name).display().to_string();
            args.extend([
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port,
                "--tls-cert-file".to_owned(),
                file("redis.crt"),
                "--tls-key-file".to_owned(),
                file("redis.key"),
                "--tls-ca-cert-file".to_owned(),
                file("ca.crt"),
                "--tls-auth-clients".to_owned(),
                if mutual { "yes" } else { "no" }.to_owned(),
            ]);
        }
    }
    args.extend(extra.iter().cloned());
    let mut child = Command::new("redis-server")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server (install the redis-server package): {e}")
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_error = "no answer to PING within 10 s".to_owned();
    while Instant::now() < deadline {
        let up = match tls {
            None => ping(addr),
            Some(_) => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        };
        if up {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            last_error = format!("redis-server exited with {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(last_error)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused process is let run again first, so it dies of SIGKILL at once.
        if let Ok(None) = self.child.try_wait() {
            self.resume();
        }
        self.kill();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
