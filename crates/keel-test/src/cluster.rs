//! A private Redis Cluster for tests: masters on free loopback ports, each a `redis-server`
//! with cluster mode on, joined and given all 16384 slots by `redis-cli --cluster create`;
//! killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::redis::{free_port, spawn_on};

/// A running Redis Cluster of masters only.
pub struct RedisCluster {
    nodes: Vec<(Child, SocketAddr)>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, as `redis-cli --cluster create` requires), joins
    /// them and waits until every node reports the Cluster `ok`.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing, or the Cluster is not ready within 30 s.
    pub fn start(masters: usize) -> Self {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..masters {
            let mut started = None;
            let mut last_error = String::new();
            for _ in 0..5 {
                let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                match spawn_on(addr, None, &node_args(dir.path(), i)) {
                    Ok(child) => {
                        started = Some((child, addr));
                        break;
                    }
                    Err(e) => last_error = e,
                }
            }
            nodes.push(
                started.unwrap_or_else(|| panic!("cluster node did not start: {last_error}")),
            );
        }
        let cluster = Self { nodes, dir };
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes.iter().map(|(_, a)| a.to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (install redis-tools): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ready("the Redis Cluster did not become ready");
        cluster
    }

    /// Waits (30 s at most, else panics with `failure`) until every node says the Cluster is ok.
    fn wait_until_ready(&self, failure: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.nodes.iter().all(|(_, addr)| ready(*addr)) {
            assert!(Instant::now() < deadline, "{failure}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|(_, a)| a.to_string()).collect()
    }

    /// Kills node `i` (as `kill -9` would) and starts it again on its port with its Cluster
    /// configuration, so it serves its slots again (empty), and waits until the Cluster is ok.
    ///
    /// # Panics
    /// If the node does not come back within 30 s.
    pub fn restart(&mut self, i: usize) {
        let (child, addr) = &mut self.nodes[i];
        let _ = child.kill();
        let _ = child.wait();
        *child = spawn_on(*addr, None, &node_args(self.dir.path(), i))
            .unwrap_or_else(|e| panic!("cluster node restart: {e}"));
        self.wait_until_ready("the Redis Cluster did not recover");
    }

    /// Makes every node ask clients for `password` from now on (`CONFIG SET requirepass`).
    /// Use it last: [`RedisCluster::restart`] does not know the password.
    ///
    /// # Panics
    /// If a node does not take it.
    pub fn require_password(&self, password: &str) {
        for (_, addr) in &self.nodes {
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
                .args(["config", "set", "requirepass", password])
                .output()
                .expect("redis-cli runs");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("OK"),
                "CONFIG SET requirepass: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `redis://<first node>`: the URL giving scheme and credentials (its host and port are
    /// replaced by each node's).
    pub fn url(&self) -> String {
        format!("redis://{}", self.nodes[0].1)
    }
}

/// The arguments of node `i`, whose files are in `dir`.
fn node_args(dir: &std::path::Path, i: usize) -> Vec<String> {
    vec![
        "--cluster-enabled".to_owned(),
        "yes".to_owned(),
        "--cluster-config-file".to_owned(),
        dir.join(format!("nodes-{i}.conf")).display().to_string(),
        "--cluster-node-timeout".to_owned(),
        "2000".to_owned(),
        "--dir".to_owned(),
        dir.display().to_string(),
    ]
}

/// Whether the node says the Cluster is ok and knows every other node.
fn ready(addr: SocketAddr) -> bool {
    let info = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "cluster",
            "info",
        ])
        .output();
    info.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok"))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
