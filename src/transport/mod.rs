//! Engine.IO sessions and the two transports that carry them: WebSocket and HTTP long-polling.
//!
//! An [`EngineSession`] is what the gateway talks to: session id, heartbeat, the bounded
//! outbound queue ([`Outbox`]), the next inbound `message`, and why the session ended. It is
//! served by one task, whatever carries it. A session opened over WebSocket keeps its socket in
//! that task; one opened over polling is fed by HTTP requests through [`PollingSession`] and may
//! be upgraded to WebSocket in the middle of its life, without the gateway noticing.
//!
//! The [`Engine`] registers every open session by id, so polling requests and upgrades can find
//! theirs. The transport hands `message` packets up as opaque text or bytes and never looks
//! inside them: Socket.IO packets, namespaces and rooms belong to the gateway.

mod close;
mod config;
mod engine;
mod outbox;
mod permit;
mod polling;
mod session;
mod websocket;

pub use close::CloseReason;
pub use config::TransportConfig;
pub use engine::{Engine, SessionHandle};
pub use outbox::{message_frames, Frame, Outbox};
pub use permit::ConnectionPermit;
pub use polling::{PollError, PollingSession, UpgradeError};
pub use session::{EngineSession, Inbound};
