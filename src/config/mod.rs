//! The command line: `wsgate` (serve), `wsgate emit`, `wsgate disconnect`, `wsgate demo`.
//!
//! - [`serve`]: the serving flags, in groups that mirror the runtime settings.
//! - [`settings`]: their one conversion into [`Settings`], checked.
//! - [`publish`]: where Redis is and which adapter protocol (shared), and the publishing flags.
//! - [`duration`]: typed values: durations (`10s`, `250ms`, or milliseconds), `0` for off.
//!
//! Sits on top: imports the layers it configures, and none of them imports it.

pub mod duration;
pub mod publish;
pub mod serve;
pub mod settings;

pub use publish::{AdapterKind, DisconnectArgs, EmitArgs, PublishArgs, RedisArgs, SubscriptionModeArg};
pub use serve::{
    ClientArgs, ClusterArgs, InboundArgs, LifecycleArgs, ListenerArgs, LogFormat, OperationsArgs, ServeArgs,
    SessionArgs, SessionStoreKind, Transport, TransportArgs,
};
pub use settings::{ConfigError, Settings};

use clap::{Parser, Subcommand};
use std::net::SocketAddr;

#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about = "Socket.IO gateway for Express apps: authenticates WebSockets from the express-session cookie and the session record in the app's store (Redis, memcached or PostgreSQL)",
    long_about = None
)]
pub struct Cli {
    /// Without a subcommand, wsgate serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// One-shot publishing into the cluster, as `@socket.io/redis-emitter` does, and the demo.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emit an event to sockets, on every node of the cluster.
    ///
    /// wsgate emit --room user:42 --event notice --data '{"text":"hi"}'
    Emit(EmitArgs),
    /// Disconnect sockets, on every node of the cluster (e.g. on logout: --room session:SID).
    Disconnect(DisconnectArgs),
    /// See wsgate work in five minutes: a login page, a live page and an embedded redis-server
    /// (needs redis-server on PATH). `--join` starts a second node of the same demo.
    Demo(DemoArgs),
}

impl Command {
    /// Where a publishing command publishes (`None` for the demo).
    pub fn target(&self) -> Option<&PublishArgs> {
        match self {
            Command::Emit(a) => Some(&a.target),
            Command::Disconnect(a) => Some(&a.target),
            Command::Demo(_) => None,
        }
    }
}

/// Flags of `wsgate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address to serve the demo on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// A Redis to use instead of starting one (required with --join).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Join the demo already running on --redis-url as a second node.
    #[arg(long, requires = "redis_url")]
    pub join: bool,
}

/// Sets up logging to stderr in the chosen format; the level comes from `RUST_LOG`. Colours
/// only on a terminal: a log file or a journal gets plain text.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
