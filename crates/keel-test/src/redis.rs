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
            match spawn_on(addr) {
                Ok(child) => return Self { child, addr },
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
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
        self.child = spawn_on(self.addr).unwrap_or_else(|e| panic!("redis-server restart: {e}"));
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

/// Runs `redis-server` on `addr` and waits until it answers PING.
fn spawn_on(addr: SocketAddr) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server (install the redis-server package): {e}")
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_error = "no answer to PING within 10 s".to_owned();
    while Instant::now() < deadline {
        if ping(addr) {
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

fn free_port() -> u16 {
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
