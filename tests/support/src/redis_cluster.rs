//! A real Redis Cluster: several redis-server processes joined by `redis-cli --cluster create`.

use crate::redis_server::{redis_server, wait_for_redis};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Redis Cluster of real `redis-server` processes on free ports (`masters` masters, each with
/// `replicas` replicas), created with `redis-cli --cluster create`; killed and its directory
/// removed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: std::path::PathBuf,
}

/// A port whose cluster bus port (port + 10000) is free too. Ports come from 10000–15999 (bus
/// 20000–25999): below the kernel's ephemeral range, where the tests' other listeners and
/// clients get theirs, and never one cluster's bus port another's node port. Handed out once
/// per process, since clusters of parallel tests start at the same time.
fn free_cluster_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 10_000 + rand::random::<u16>() % 6_000;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let mut taken = TAKEN.lock().unwrap();
        if !taken.contains(&port) && free(port) && free(port + 10_000) {
            taken.push(port);
            return port;
        }
    }
}

impl RedisCluster {
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "wsgate-cluster-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let count = masters * (1 + replicas);
        let ports: Vec<u16> = (0..count).map(|_| free_cluster_port()).collect();
        let children = ports
            .iter()
            .map(|port| {
                Some(
                    redis_server(*port)
                        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                        .arg("--dir")
                        .arg(&dir)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server must be installed (see .ci/run)"),
                )
            })
            .collect();
        let cluster = RedisCluster { ports, children, dir };
        for port in &cluster.ports {
            wait_for_redis(*port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (see .ci/run)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok().await;
        // A replica that never synced with its master refuses to take over from it.
        for port in &cluster.ports {
            for attempt in 0.. {
                let info: String = Self::node_command(*port, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(attempt < 400, "replica {port} did not sync: {info}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        cluster
    }

    /// Waits until a node other than `old` serves `key`'s slot (a replica took over).
    pub async fn wait_for_new_master(&self, key: &str, old: u16) -> u16 {
        for _ in 0..400 {
            let master = self.master_of(key).await;
            if master != old {
                return master;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no replica took over from {old}");
    }

    /// Seed URLs, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A command connection to the whole cluster.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    }

    async fn node_command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for _ in 0..600 {
            let mut ok = true;
            for (port, child) in self.ports.iter().zip(&self.children) {
                if child.is_none() {
                    continue;
                }
                let info: String = Self::node_command(*port, &["CLUSTER", "INFO"])
                    .await
                    .unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not reach cluster_state:ok");
    }

    /// The port of the master serving `key`'s slot (asked of a live node).
    pub async fn master_of(&self, key: &str) -> u16 {
        let live = self
            .ports
            .iter()
            .zip(&self.children)
            .find(|(_, c)| c.is_some())
            .unwrap()
            .0;
        let slot: i64 = Self::node_command(*live, &["CLUSTER", "KEYSLOT", key]).await.unwrap();
        let slots: Vec<Vec<redis::Value>> = Self::node_command(*live, &["CLUSTER", "SLOTS"]).await.unwrap();
        for range in slots {
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to)), Some(redis::Value::Array(master))) =
                (range.first(), range.get(1), range.get(2))
            else {
                continue;
            };
            if (*from..=*to).contains(&slot) {
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return *port as u16;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Waits until every replica of the master on `port` has acknowledged all its writes
    /// (`slaveN:…,offset=` up to `master_repl_offset`; replicas acknowledge once a second).
    pub async fn wait_replicated(&self, port: u16) {
        for _ in 0..200 {
            let info: String = Self::node_command(port, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            let master = field("master_repl_offset:");
            let replicas: Vec<i64> = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")))
                .filter_map(|v| v.parse().ok())
                .collect();
            if master.is_some() && !replicas.is_empty() && replicas.iter().all(|r| Some(*r) >= master) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the replicas of {port} did not catch up");
    }

    /// Kills the node on `port` (SIGKILL: a crash, not a shutdown).
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
