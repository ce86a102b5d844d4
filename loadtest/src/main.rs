//! `loadgen`: drives a Socket.IO gateway (wsgate or the Node reference) like many browsers with
//! session cookies, and prints one JSON result line per scenario (plus a readable summary on
//! stderr).
//!
//! The parent process seeds sessions in Redis (connect-redis format), spawns worker processes
//! (each stays under the per-process open-file limit), samples the servers' `/proc/PID`, and
//! publishes through the Redis emitter protocol. Workers open the sockets, from source
//! addresses 127.0.0.2–254, and report what they saw.

mod client;
mod polling;
mod report;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use wsgate::auth::SessionSecrets;
use wsgate::protocol::adapter::{Broadcast, Selector, EMITTER_UID};
use wsgate::protocol::classic::Channels;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for Socket.IO gateways authenticated by express-session cookies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario against one system and print its JSON result.
    Run(Box<RunArgs>),
    /// Render docs/BENCHMARKS.md tables from result lines.
    Report(report::ReportArgs),
    /// (internal) One worker process.
    #[command(hide = true)]
    Worker { spec: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// N sockets as fast as the server admits them.
    ConnectStorm,
    /// N sockets held idle: server RSS and CPU per connection.
    IdleHold,
    /// R rooms of S members; emitter publishes at a fixed rate; delivery rate, latency, loss.
    Fanout,
    /// Connect/disconnect at a steady rate while broadcasting to observers.
    Churn,
    /// N polling sessions held idle with a long-poll pending (RSS per session), then all
    /// upgraded to WebSocket with that poll in flight (upgrade latency).
    Polling,
    /// N sockets each emit with an ack at a fixed rate; the server stores each event in a Redis
    /// Stream before acking (acked events/s, ack latency).
    Inbound,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Name of the system under test in the result (e.g. wsgate, node).
    #[arg(long)]
    system: String,
    /// Which variant of the scenario this is (results are compared within a variant).
    #[arg(long, default_value = "")]
    variant: String,
    /// Gateway address; repeat for several nodes (sockets are spread round-robin).
    #[arg(long = "target", required = true)]
    targets: Vec<SocketAddr>,
    /// PIDs of the server processes, for RSS and CPU.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// PIDs of the redis-server processes, for the Redis CPU a fan-out costs.
    #[arg(long = "redis-pid")]
    redis_pids: Vec<u32>,
    /// --redis-url lists seed nodes of a Redis Cluster (comma-separated).
    #[arg(long)]
    redis_cluster: bool,
    /// The adapter protocol the servers speak: broadcasts are published as its emitter would.
    #[arg(long, default_value = "classic")]
    adapter: String,
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "loadtest-secret")]
    secret: String,
    #[arg(long, default_value = "sess:")]
    session_prefix: String,
    /// Where sessions are seeded: redis (connect-redis records at --redis-url), memcached
    /// (connect-memcached) or postgres (connect-pg-simple's "session" table).
    #[arg(long, default_value = "redis")]
    session_store: String,
    /// memcached `host:port` or a Postgres URL, for --session-store memcached|postgres.
    #[arg(long)]
    session_store_url: Option<String>,
    #[arg(long, default_value = "connect.sid")]
    cookie_name: String,
    /// Sockets (observers, for churn).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Worker processes (each holds connections / workers sockets; keep that under ~18k).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to hold (idle-hold), to publish (fanout) or to churn (churn).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Fan-out: number of rooms (members = connections / rooms).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Fan-out and churn: messages published per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds to wait after publishing for the last deliveries (a saturated server lags).
    #[arg(long, default_value_t = 2)]
    drain: u64,
    /// Churn: connects (and disconnects) per second, over all workers.
    #[arg(long, default_value_t = 100)]
    churn_rate: u64,
    /// Inbound: events each socket emits per second.
    #[arg(long, default_value_t = 5.0)]
    events_per_socket: f64,
    /// Append the JSON result line to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// What a worker is told to do.
#[derive(Serialize, Deserialize, Clone)]
struct WorkerSpec {
    scenario: Scenario,
    targets: Vec<SocketAddr>,
    path: String,
    secret: String,
    cookie_name: String,
    run_id: String,
    /// Global indices of this worker's sockets.
    start: usize,
    end: usize,
    concurrency: usize,
    /// Churn: connects per second for this worker, and its churn session indices.
    churn_rate: u64,
    churn_start: usize,
    churn_end: usize,
    #[serde(default)]
    events_per_socket: f64,
}

/// What a worker reports after its initial connect phase, and at the end.
#[derive(Serialize, Deserialize, Default)]
struct WorkerReport {
    phase: String,
    ok: u64,
    failed: BTreeMap<String, u64>,
    handshake_us: Vec<u32>,
    started_ns: u64,
    finished_ns: u64,
    deliveries: u64,
    delivery_us: Vec<u32>,
    server_closed: u64,
    churn_ok: u64,
    churn_failed: BTreeMap<String, u64>,
    last_delivery_ns: u64,
    upgrade_us: Vec<u32>,
    upgrade_failed: BTreeMap<String, u64>,
    #[serde(default)]
    acks_refused: u64,
}

fn session_id(run_id: &str, n: usize) -> String {
    format!("lt{run_id}-{n}")
}

fn churn_session(run_id: &str, n: usize) -> String {
    format!("lt{run_id}-churn-{n}")
}

/// The user a socket's session belongs to: fan-out groups sockets into rooms by user.
fn user_for(scenario: Scenario, n: usize, rooms: usize) -> Value {
    match scenario {
        Scenario::Fanout => json!(format!("room-{}", n % rooms.max(1))),
        Scenario::Churn => json!("observers"),
        _ => json!(n),
    }
}

fn cookie(cookie_name: &str, secrets: &SessionSecrets, sid: &str) -> String {
    let signed = secrets.sign(sid);
    let encoded = signed.replace(':', "%3A").replace('+', "%2B").replace('/', "%2F");
    format!("{cookie_name}={encoded}")
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64) * p).ceil() as usize;
    Some(sorted[idx.clamp(1, sorted.len()) - 1])
}

fn latency_summary(mut samples: Vec<u32>) -> Value {
    samples.sort_unstable();
    let ms = |v: Option<u32>| v.map(|us| (us as f64 / 1000.0 * 1000.0).round() / 1000.0);
    json!({
        "samples": samples.len(),
        "p50_ms": ms(percentile(&samples, 0.50)),
        "p99_ms": ms(percentile(&samples, 0.99)),
        "p999_ms": ms(percentile(&samples, 0.999)),
        "max_ms": ms(samples.last().copied()),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Run(args) => run(*args).await,
        Command::Report(args) => report::render(args),
        Command::Worker { spec } => worker(serde_json::from_str(&spec)?).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Parent

/// RSS (KiB) and CPU ticks of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: utime and stime are fields 14 and 15 of the whole line.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

fn sample_all(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|p| proc_sample(*p))
        .fold((0, 0), |(r, t), (r2, t2)| (r + r2, t + t2))
}

/// Machine-wide memory now, in KiB: (used = MemTotal - MemAvailable, kernel = slab + kernel
/// stacks + page tables + TCP buffers). Deltas around a connect phase show what the sockets
/// cost the kernel, which no process's RSS includes.
fn machine_memory() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    // "TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1" (mem in pages).
    let tcp_pages = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "mem")
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let used = field("MemTotal").saturating_sub(field("MemAvailable"));
    let kernel = field("Slab") + field("KernelStack") + field("PageTables") + tcp_pages * 4;
    (used, kernel)
}

struct WorkerHandle {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl WorkerHandle {
    async fn report(&mut self) -> Result<WorkerReport, Box<dyn std::error::Error>> {
        let line = self.lines.next_line().await?.ok_or("worker exited without a report")?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Tells the worker to go on to its next phase (keeping its stdin open) and reads its report.
    async fn next_phase(&mut self) -> Result<WorkerReport, Box<dyn std::error::Error>> {
        let stdin = self.child.stdin.as_mut().ok_or("worker stdin closed")?;
        stdin.write_all(b"next\n").await?;
        stdin.flush().await?;
        self.report().await
    }

    async fn stop(&mut self) -> Result<WorkerReport, Box<dyn std::error::Error>> {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"stop\n").await;
        }
        self.report().await
    }
}

async fn seed_sessions(args: &RunArgs, run_id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let record = |user: &Value| {
        json!({"cookie": {"originalMaxAge": 3_600_000, "expires": "2030-01-01T00:00:00.000Z", "httpOnly": true, "path": "/"}, "passport": {"user": user}}).to_string()
    };
    let churners = if args.scenario == Scenario::Churn {
        churn_pool(args)
    } else {
        0
    };
    let sessions: Vec<(String, String)> = (0..args.connections)
        .map(|n| (session_id(run_id, n), record(&user_for(args.scenario, n, args.rooms))))
        .chain((0..churners).map(|n| (churn_session(run_id, n), record(&json!(format!("churn-{n}"))))))
        .collect();
    let store_url = || args.session_store_url.clone().ok_or("--session-store-url is needed");
    match args.session_store.as_str() {
        "redis" => seed_redis(args, &sessions).await,
        "memcached" => seed_memcached(&store_url()?, &args.session_prefix, &sessions).await,
        "postgres" => seed_postgres(&store_url()?, &sessions).await,
        other => Err(format!("unknown --session-store {other}").into()),
    }
}

/// connect-redis: `SET <prefix><sid> <json> EX 3600`, pipelined (on a cluster, where keys of
/// different slots cannot share a pipeline, concurrent single commands).
async fn seed_redis(args: &RunArgs, sessions: &[(String, String)]) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = redis_connection(args)?;
    let prefix = &args.session_prefix;
    for batch in sessions.chunks(5000) {
        if args.redis_cluster {
            let sets = batch.iter().map(|(sid, record)| {
                let mut conn = conn.clone();
                let key = format!("{prefix}{sid}");
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(record)
                        .arg("EX")
                        .arg(3600)
                        .query_async::<()>(&mut conn)
                        .await
                }
            });
            for set in futures_util::future::join_all(sets).await {
                set?;
            }
        } else {
            let mut pipe = redis::pipe();
            for (sid, record) in batch {
                pipe.cmd("SET")
                    .arg(format!("{prefix}{sid}"))
                    .arg(record)
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
    }
    Ok(())
}

/// connect-memcached: the JSON with the memcached client's JSON flag (2), TTL one hour.
async fn seed_memcached(
    url: &str,
    prefix: &str,
    sessions: &[(String, String)],
) -> Result<(), Box<dyn std::error::Error>> {
    use async_memcached::AsciiProtocol;
    let mut client = async_memcached::Client::new(format!("tcp://{}", url.trim_start_matches("memcache://"))).await?;
    for (sid, record) in sessions {
        client
            .set(format!("{prefix}{sid}"), record.as_str(), Some(3600), Some(2))
            .await?;
    }
    Ok(())
}

/// connect-pg-simple: rows of the "session" table, expiring in an hour.
async fn seed_postgres(url: &str, sessions: &[(String, String)]) -> Result<(), Box<dyn std::error::Error>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    for batch in sessions.chunks(5000) {
        let (sids, records): (Vec<&str>, Vec<&str>) = batch.iter().map(|(s, r)| (s.as_str(), r.as_str())).unzip();
        client
            .execute(
                r#"INSERT INTO "session" (sid, sess, expire)
                   SELECT sid, sess::json, now() + interval '1 hour' FROM unnest($1::text[], $2::text[]) AS t(sid, sess)
                   ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire"#,
                &[&sids, &records],
            )
            .await?;
    }
    Ok(())
}

fn churn_pool(args: &RunArgs) -> usize {
    (args.churn_rate as usize * 2).max(args.workers * 10)
}

async fn spawn_workers(args: &RunArgs, run_id: &str) -> Result<Vec<WorkerHandle>, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let workers = args.workers.max(1);
    let pool = churn_pool(args);
    let mut handles = Vec::new();
    for w in 0..workers {
        let spec = WorkerSpec {
            scenario: args.scenario,
            targets: args.targets.clone(),
            path: args.path.clone(),
            secret: args.secret.clone(),
            cookie_name: args.cookie_name.clone(),
            run_id: run_id.into(),
            start: args.connections * w / workers,
            end: args.connections * (w + 1) / workers,
            concurrency: args.concurrency,
            churn_rate: args.churn_rate / workers as u64,
            churn_start: pool * w / workers,
            churn_end: pool * (w + 1) / workers,
            events_per_socket: args.events_per_socket,
        };
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg(serde_json::to_string(&spec)?)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        handles.push(WorkerHandle {
            child,
            lines: BufReader::new(stdout).lines(),
        });
    }
    Ok(handles)
}

fn merge(reports: &[WorkerReport]) -> (u64, BTreeMap<String, u64>) {
    let mut failed = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.failed {
            *failed.entry(k.clone()).or_default() += v;
        }
    }
    (reports.iter().map(|r| r.ok).sum(), failed)
}

/// Publishes `["bench", {"t": now_ns, "seq": n}]` through the emitter protocol at `rate`/s for
/// `duration`, to the rooms `room_of(seq)` names. Returns how many messages were published.
async fn publish_for(
    args: &RunArgs,
    rate: u64,
    duration: Duration,
    room_of: impl Fn(u64) -> String,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut conn = redis_connection(args)?;
    let sharded = args.adapter == "sharded";
    let channels = Channels::new("socket.io", "/");
    let shard_channels = wsgate::protocol::sharded::ShardedChannels::new("socket.io", "/");
    let started = Instant::now();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while started.elapsed() < duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= seq {
            continue;
        }
        let mut commands = Vec::new();
        while seq < due {
            let room = room_of(seq);
            let message = Broadcast {
                uid: Some(EMITTER_UID.into()),
                nsp: "/".into(),
                data: vec![
                    rmpv::Value::from("bench"),
                    rmpv::Value::Map(vec![
                        (rmpv::Value::from("t"), rmpv::Value::from(client::now_ns())),
                        (rmpv::Value::from("seq"), rmpv::Value::from(seq)),
                    ]),
                ],
                selector: Selector {
                    rooms: vec![room.clone()],
                    except: vec![],
                },
                flags: vec![],
            };
            let cmd = if args.adapter == "streams" {
                // What @socket.io/redis-streams-emitter (and wsgate's emitter) appends.
                let mut cmd = redis::cmd("XADD");
                cmd.arg("socket.io").arg("MAXLEN").arg("~").arg(10_000).arg("*");
                let outgoing = wsgate::protocol::sharded::encode::broadcast(&message, EMITTER_UID, None);
                for (name, value) in wsgate::protocol::streams::entry_fields(&outgoing) {
                    cmd.arg(name).arg(value);
                }
                cmd
            } else if sharded {
                // What a sharded node or wsgate's emitter publishes: the room's own channel.
                let mut cmd = redis::cmd("SPUBLISH");
                cmd.arg(shard_channels.room(&room))
                    .arg(wsgate::protocol::sharded::encode::broadcast(&message, EMITTER_UID, None).bytes());
                cmd
            } else {
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(channels.for_rooms(&[room])).arg(message.encode(true));
                cmd
            };
            commands.push(cmd);
            seq += 1;
        }
        if args.redis_cluster {
            // Channels of different slots cannot share a pipeline on a cluster: one request
            // each, all in flight together.
            let sends = commands.into_iter().map(|cmd| {
                let mut conn = conn.clone();
                async move { cmd.query_async::<redis::Value>(&mut conn).await }
            });
            for sent in futures_util::future::join_all(sends).await {
                sent?;
            }
        } else {
            let mut pipe = redis::pipe();
            for cmd in commands {
                pipe.add_command(cmd).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
    }
    Ok(seq)
}

/// Commands on the Redis (or Redis Cluster) the servers use.
fn redis_connection(args: &RunArgs) -> Result<wsgate::redis_connection::RedisConnection, Box<dyn std::error::Error>> {
    let target = wsgate::redis_connection::RedisTarget::parse(&args.redis_url, args.redis_cluster)?;
    Ok(target.connect(Duration::from_secs(10))?)
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let run_id = format!("{:x}", rand::random::<u32>());
    seed_sessions(&args, &run_id).await?;
    let (baseline_rss, ticks_at_start) = sample_all(&args.server_pids);
    let memory_before = machine_memory();
    let started = Instant::now();
    let mut workers = spawn_workers(&args, &run_id).await?;
    let mut connected = Vec::new();
    for w in &mut workers {
        connected.push(w.report().await?);
    }
    let connect_wall = started.elapsed();
    let (rss_connected, ticks_connected) = sample_all(&args.server_pids);
    let memory_after = machine_memory();
    let (ok, failed) = merge(&connected);
    let first_start = connected.iter().map(|r| r.started_ns).min().unwrap_or(0);
    let last_end = connected.iter().map(|r| r.finished_ns).max().unwrap_or(0);
    let connect_secs = (last_end.saturating_sub(first_start) as f64 / 1e9).max(1e-9);
    let handshakes: Vec<u32> = connected.iter().flat_map(|r| r.handshake_us.iter().copied()).collect();
    let mut result = json!({
        "scenario": args.scenario,
        "variant": args.variant,
        "system": args.system,
        "nodes": args.targets.len(),
        "connections": args.connections,
        "workers": args.workers,
        "connected": ok,
        "failed": failed,
        "handshakes_per_s": (ok as f64 / connect_secs).round(),
        "handshake_latency": latency_summary(handshakes),
        "connect_wall_s": (connect_wall.as_secs_f64() * 100.0).round() / 100.0,
        // Everything the connect phase cost the machine: servers, load generator, kernel.
        "machine_used_delta_kib": memory_after.0 as i64 - memory_before.0 as i64,
        "kernel_delta_kib": memory_after.1 as i64 - memory_before.1 as i64,
        "server_rss_connected_kib": rss_connected,
    });
    if !args.server_pids.is_empty() {
        let cpu_s = (ticks_connected - ticks_at_start) as f64 / 100.0;
        result["connect_server_cpu_s"] = json!(cpu_s);
        result["handshakes_per_server_cpu_s"] = json!((ok as f64 / cpu_s.max(0.01)).round());
    }

    match args.scenario {
        Scenario::ConnectStorm => {}
        Scenario::IdleHold => measure_idle(&args, baseline_rss, ok, &mut result).await,
        Scenario::Fanout => {
            let rooms = args.rooms.max(1);
            let (_, ticks_before) = sample_all(&args.server_pids);
            let (_, redis_before) = sample_all(&args.redis_pids);
            let publish_start = client::now_ns();
            let published = publish_for(&args, args.rate, Duration::from_secs(args.duration), |seq| {
                format!("user:room-{}", seq % rooms as u64)
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(args.drain)).await;
            let (_, ticks_after) = sample_all(&args.server_pids);
            let (_, redis_after) = sample_all(&args.redis_pids);
            let mut done = Vec::new();
            for w in &mut workers {
                done.push(w.stop().await?);
            }
            let delivered: u64 = done.iter().map(|r| r.deliveries).sum();
            if !args.server_pids.is_empty() {
                let cpu_s = (ticks_after - ticks_before) as f64 / 100.0;
                result["server_cpu_s"] = json!(cpu_s);
                result["deliveries_per_server_cpu_s"] = json!((delivered as f64 / cpu_s.max(0.01)).round());
            }
            if !args.redis_pids.is_empty() {
                let cpu_s = (redis_after - redis_before) as f64 / 100.0;
                result["redis_cpu_s"] = json!(cpu_s);
                result["deliveries_per_redis_cpu_s"] = json!((delivered as f64 / cpu_s.max(0.01)).round());
            }
            // Every socket n is in room n % rooms; with failed handshakes the room sizes are
            // unknown, so expected and lost are left out rather than guessed.
            let expected: Option<u64> = (ok as usize == args.connections).then(|| {
                (0..published)
                    .map(|seq| members(args.connections, rooms, (seq % rooms as u64) as usize) as u64)
                    .sum()
            });
            let samples: Vec<u32> = done.iter().flat_map(|r| r.delivery_us.iter().copied()).collect();
            result["rooms"] = json!(rooms);
            result["published"] = json!(published);
            result["rate_per_s"] = json!(args.rate);
            result["delivered"] = json!(delivered);
            result["expected"] = json!(expected);
            result["lost"] = json!(expected.map(|e| e.saturating_sub(delivered)));
            // Throughput over the time deliveries actually took (longer than the publishing window
            // when the servers lag behind).
            let last = done.iter().map(|r| r.last_delivery_ns).max().unwrap_or(publish_start);
            let window = (last.saturating_sub(publish_start) as f64 / 1e9).max(args.duration as f64);
            result["offered_deliveries_per_s"] = json!(expected.map(|e| e as f64 / args.duration as f64));
            result["deliveries_per_s"] = json!((delivered as f64 / window).round());
            result["delivery_latency"] = latency_summary(samples);
            result["server_closed"] = json!(done.iter().map(|r| r.server_closed).sum::<u64>());
        }
        Scenario::Polling => {
            // Idle polling sessions, each with a long-poll pending.
            measure_idle(&args, baseline_rss, ok, &mut result).await;
            // Every session upgrades at once, its long-poll in flight.
            let (_, ticks_before) = sample_all(&args.server_pids);
            let mut upgraded = Vec::new();
            for w in &mut workers {
                upgraded.push(w.next_phase().await?);
            }
            let (_, ticks_after) = sample_all(&args.server_pids);
            let mut upgrade_failed = BTreeMap::new();
            for r in &upgraded {
                for (k, v) in &r.upgrade_failed {
                    *upgrade_failed.entry(k.clone()).or_insert(0u64) += v;
                }
            }
            let samples: Vec<u32> = upgraded.iter().flat_map(|r| r.upgrade_us.iter().copied()).collect();
            result["upgraded"] = json!(samples.len());
            result["upgrade_failed"] = json!(upgrade_failed);
            if !args.server_pids.is_empty() {
                let cpu_s = (ticks_after - ticks_before) as f64 / 100.0;
                result["upgrade_server_cpu_s"] = json!(cpu_s);
                result["upgrades_per_server_cpu_s"] = json!((samples.len() as f64 / cpu_s.max(0.01)).round());
            }
            result["upgrade_latency"] = latency_summary(samples);
        }
        Scenario::Inbound => {
            let (_, ticks_before) = sample_all(&args.server_pids);
            let window = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.duration)).await;
            let (_, ticks_after) = sample_all(&args.server_pids);
            let seconds = window.elapsed().as_secs_f64();
            let mut done = Vec::new();
            for w in &mut workers {
                done.push(w.stop().await?);
            }
            let acked: u64 = done.iter().map(|r| r.deliveries).sum();
            let refused: u64 = done.iter().map(|r| r.acks_refused).sum();
            result["events_per_socket"] = json!(args.events_per_socket);
            result["offered_events_per_s"] = json!(ok as f64 * args.events_per_socket);
            result["acked"] = json!(acked);
            result["refused"] = json!(refused);
            result["acked_per_s"] = json!((acked as f64 / seconds).round());
            if !args.server_pids.is_empty() {
                let cpu_s = (ticks_after - ticks_before) as f64 / 100.0;
                result["server_cpu_s"] = json!(cpu_s);
                result["acked_per_server_cpu_s"] = json!((acked as f64 / cpu_s.max(0.01)).round());
            }
            result["ack_latency"] = latency_summary(done.iter().flat_map(|r| r.delivery_us.iter().copied()).collect());
            result["server_closed"] = json!(done.iter().map(|r| r.server_closed).sum::<u64>());
        }
        Scenario::Churn => {
            let published = publish_for(&args, args.rate, Duration::from_secs(args.duration), |_| {
                "user:observers".into()
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(args.drain)).await;
            let mut done = Vec::new();
            for w in &mut workers {
                done.push(w.stop().await?);
            }
            let delivered: u64 = done.iter().map(|r| r.deliveries).sum();
            let expected = published * ok;
            let mut churn_failed = BTreeMap::new();
            for r in &done {
                for (k, v) in &r.churn_failed {
                    *churn_failed.entry(k.clone()).or_insert(0u64) += v;
                }
            }
            result["published"] = json!(published);
            result["delivered"] = json!(delivered);
            result["expected"] = json!(expected);
            result["lost"] = json!(expected.saturating_sub(delivered));
            result["churn_connects"] = json!(done.iter().map(|r| r.churn_ok).sum::<u64>());
            result["churn_errors"] = json!(churn_failed);
            result["observers_closed_by_server"] = json!(done.iter().map(|r| r.server_closed).sum::<u64>());
            result["delivery_latency"] =
                latency_summary(done.iter().flat_map(|r| r.delivery_us.iter().copied()).collect());
        }
    }
    for w in &mut workers {
        if w.child.stdin.is_some() {
            let _ = w.stop().await;
        }
        let _ = w.child.wait().await;
    }

    let line = result.to_string();
    println!("{line}");
    eprintln!("{}", report::summary(&result));
    if let Some(out) = &args.out {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
        use std::io::Write as _;
        writeln!(file, "{line}")?;
    }
    Ok(())
}

/// Lets allocations settle, then holds the connections idle for the scenario's duration:
/// server RSS per connection (above the baseline before any was opened) and idle CPU.
async fn measure_idle(args: &RunArgs, baseline_rss: u64, connected: u64, result: &mut Value) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, ticks_before) = sample_all(&args.server_pids);
    let hold = Duration::from_secs(args.duration);
    tokio::time::sleep(hold).await;
    let (rss_end, ticks_after) = sample_all(&args.server_pids);
    let cpu = (ticks_after - ticks_before) as f64 / 100.0 / hold.as_secs_f64() * 100.0;
    let per_connection = (rss.max(rss_end).saturating_sub(baseline_rss)) as f64 / connected.max(1) as f64;
    result["rss_baseline_kib"] = json!(baseline_rss);
    result["rss_held_kib"] = json!(rss.max(rss_end));
    result["rss_per_connection_kib"] = json!((per_connection * 100.0).round() / 100.0);
    result["idle_cpu_percent"] = json!((cpu * 10.0).round() / 10.0);
}

fn members(connections: usize, rooms: usize, room: usize) -> usize {
    connections / rooms + usize::from(room < connections % rooms)
}

// ---------------------------------------------------------------------------------------------
// Worker

#[derive(Default)]
struct Tally {
    deliveries: AtomicU64,
    refused: AtomicU64,
    last_delivery_ns: AtomicU64,
    server_closed: AtomicU64,
    latencies: parking_lot_free::Samples,
}

/// A small lock for the latency samples (std Mutex; contention is per delivery, and fine here).
mod parking_lot_free {
    #[derive(Default)]
    pub struct Samples(std::sync::Mutex<Vec<u32>>);
    impl Samples {
        pub fn push(&self, v: u32) {
            if let Ok(mut s) = self.0.lock() {
                // Cap memory: keep up to 2M samples per worker.
                if s.len() < 2_000_000 {
                    s.push(v);
                }
            }
        }
        pub fn take(&self) -> Vec<u32> {
            self.0.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default()
        }
    }
}

async fn worker(spec: WorkerSpec) -> Result<(), Box<dyn std::error::Error>> {
    if spec.scenario == Scenario::Polling {
        return polling_worker(spec).await;
    }
    let secrets = SessionSecrets::new(vec![spec.secret.as_bytes().to_vec()]).ok_or("empty secret")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tally = Arc::new(Tally::default());
    let timeout = Duration::from_secs(30);
    let started_ns = client::now_ns();
    let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut tasks = Vec::new();
    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, String>>();
    for n in spec.start..spec.end {
        let target = spec.targets[n % spec.targets.len()];
        let cookie = cookie(&spec.cookie_name, &secrets, &session_id(&spec.run_id, n));
        let (gate, path, stop, tally, results) = (
            gate.clone(),
            spec.path.clone(),
            stop_rx.clone(),
            tally.clone(),
            results_tx.clone(),
        );
        let hold = spec.scenario != Scenario::ConnectStorm;
        let inbound = spec.scenario == Scenario::Inbound;
        let events_per_socket = spec.events_per_socket;
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let connected = client::connect(target, client::source_ip(n), &path, &cookie, timeout).await;
            drop(permit);
            match connected {
                Ok((ws, latency)) => {
                    let _ = results.send(Ok(latency.as_micros() as u32));
                    drop(results);
                    if !hold {
                        let mut stop = stop;
                        let _ = stop.changed().await;
                        drop(ws);
                        return;
                    }
                    if inbound {
                        let tally2 = tally.clone();
                        let closed = client::chat(ws, stop, events_per_socket, move |ack| match ack {
                            Some(latency_us) => {
                                tally2.deliveries.fetch_add(1, Ordering::Relaxed);
                                tally2.latencies.push(latency_us);
                            }
                            None => {
                                tally2.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .await;
                        if closed {
                            tally.server_closed.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    let tally2 = tally.clone();
                    let closed = client::hold(ws, stop, move |event| {
                        if let client::Event::Timestamped { latency_us } = event {
                            tally2.deliveries.fetch_add(1, Ordering::Relaxed);
                            tally2.last_delivery_ns.fetch_max(client::now_ns(), Ordering::Relaxed);
                            tally2.latencies.push(latency_us.min(u32::MAX as u64) as u32);
                        }
                    })
                    .await;
                    if closed {
                        tally.server_closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(err) => {
                    let _ = results.send(Err(client::failure_reason(&err)));
                }
            }
        }));
    }
    drop(results_tx);
    let mut report = WorkerReport {
        phase: "connected".into(),
        started_ns,
        ..Default::default()
    };
    collect_connects(&mut results_rx, &mut report).await;
    report.finished_ns = client::now_ns();
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())
        .await?;
    stdout.flush().await?;

    // Churn runs from here until stop, beside the held sockets.
    let churn = if spec.scenario == Scenario::Churn && spec.churn_rate > 0 {
        Some(tokio::spawn(churn_loop(spec.clone(), secrets.clone(), stop_rx.clone())))
    } else {
        None
    };

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    let _ = stop_tx.send(true);
    let (churn_ok, churn_failed) = match churn {
        Some(task) => task.await.unwrap_or_default(),
        None => (0, BTreeMap::new()),
    };
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let done = WorkerReport {
        phase: "done".into(),
        deliveries: tally.deliveries.load(Ordering::Relaxed),
        delivery_us: tally.latencies.take(),
        server_closed: tally.server_closed.load(Ordering::Relaxed),
        last_delivery_ns: tally.last_delivery_ns.load(Ordering::Relaxed),
        acks_refused: tally.refused.load(Ordering::Relaxed),
        churn_ok,
        churn_failed,
        ..Default::default()
    };
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&done)?).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

/// Tallies the connect results of a worker's sockets into its first report.
async fn collect_connects(
    results: &mut tokio::sync::mpsc::UnboundedReceiver<Result<u32, String>>,
    report: &mut WorkerReport,
) {
    while let Some(result) = results.recv().await {
        match result {
            Ok(us) => {
                report.ok += 1;
                report.handshake_us.push(us);
            }
            Err(reason) => *report.failed.entry(reason).or_default() += 1,
        }
    }
}

async fn write_report(report: &WorkerReport) -> Result<(), Box<dyn std::error::Error>> {
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", serde_json::to_string(report)?).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

/// The polling scenario's worker: opens its polling sessions (report "connected"), holds them
/// until told to go on, upgrades them all (report "upgraded"), holds the WebSockets until told
/// to stop (report "done").
async fn polling_worker(spec: WorkerSpec) -> Result<(), Box<dyn std::error::Error>> {
    let secrets = SessionSecrets::new(vec![spec.secret.as_bytes().to_vec()]).ok_or("empty secret")?;
    let (upgrade_tx, upgrade_rx) = tokio::sync::watch::channel(false);
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let started_ns = client::now_ns();
    let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, String>>();
    let (upgrades_tx, mut upgrades_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, String>>();
    let mut tasks = Vec::new();
    for n in spec.start..spec.end {
        let target = spec.targets[n % spec.targets.len()];
        let cookie = cookie(&spec.cookie_name, &secrets, &session_id(&spec.run_id, n));
        let (gate, path, results, upgrades) =
            (gate.clone(), spec.path.clone(), results_tx.clone(), upgrades_tx.clone());
        let (upgrade, mut close) = (upgrade_rx.clone(), close_rx.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let connected =
                polling::PollingClient::connect(target, client::source_ip(n), &path, &cookie, Duration::from_secs(30))
                    .await;
            drop(permit);
            let session = match connected {
                Ok((session, latency)) => {
                    let _ = results.send(Ok(latency.as_micros() as u32));
                    session
                }
                Err(err) => {
                    let _ = results.send(Err(client::failure_reason(&err)));
                    return;
                }
            };
            drop(results);
            match session.hold_then_upgrade(upgrade).await {
                Ok((ws, took)) => {
                    let _ = upgrades.send(Ok(took.as_micros() as u32));
                    drop(upgrades);
                    let _ = close.changed().await;
                    drop(ws);
                }
                Err(err) => {
                    let _ = upgrades.send(Err(client::failure_reason(&err)));
                }
            }
        }));
    }
    drop((results_tx, upgrades_tx));
    let mut report = WorkerReport {
        phase: "connected".into(),
        started_ns,
        ..Default::default()
    };
    collect_connects(&mut results_rx, &mut report).await;
    report.finished_ns = client::now_ns();
    write_report(&report).await?;

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    let _ = upgrade_tx.send(true);
    let mut upgraded = WorkerReport {
        phase: "upgraded".into(),
        ..Default::default()
    };
    while let Some(result) = upgrades_rx.recv().await {
        match result {
            Ok(us) => upgraded.upgrade_us.push(us),
            Err(reason) => *upgraded.upgrade_failed.entry(reason).or_default() += 1,
        }
    }
    write_report(&upgraded).await?;

    let _ = stdin.next_line().await;
    let _ = close_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    write_report(&WorkerReport {
        phase: "done".into(),
        ..Default::default()
    })
    .await
}

/// Opens `churn_rate` sockets per second, each closed again 0.5–1.5 s later.
async fn churn_loop(
    spec: WorkerSpec,
    secrets: SessionSecrets,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, BTreeMap<String, u64>) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.churn_rate as f64));
    let pool = (spec.churn_end - spec.churn_start).max(1);
    let mut n = 0usize;
    let mut tasks = Vec::new();
    while !*stop.borrow() {
        tick.tick().await;
        let index = spec.churn_start + n % pool;
        let target = spec.targets[n % spec.targets.len()];
        let cookie = cookie(&spec.cookie_name, &secrets, &churn_session(&spec.run_id, index));
        let (ok, failed, path) = (ok.clone(), failed.clone(), spec.path.clone());
        let lifetime = Duration::from_millis(500 + rand::random::<u64>() % 1000);
        tasks.push(tokio::spawn(async move {
            match client::connect(
                target,
                client::source_ip(index + 7),
                &path,
                &cookie,
                Duration::from_secs(10),
            )
            .await
            {
                Ok((ws, _)) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(lifetime).await;
                    drop(ws);
                }
                Err(err) => {
                    if let Ok(mut f) = failed.lock() {
                        *f.entry(client::failure_reason(&err)).or_default() += 1;
                    }
                }
            }
        }));
        n += 1;
    }
    for task in tasks {
        let _ = task.await;
    }
    let failed = failed.lock().map(|f| f.clone()).unwrap_or_default();
    (ok.load(Ordering::Relaxed), failed)
}
