//! The Socket.IO server: namespaces, sockets, rooms, and who may connect.
//!
//! - [`hub`]: the [`Gateway`] of one node: namespaces, the Engine.IO registry, readiness, drain.
//! - [`connection`]: one client connection's loop, the CONNECT policy and client events.
//! - [`sessions`]: sockets by express-session; revocation, rechecks, revalidation, touch.
//! - [`namespace`]: the sockets and rooms of one namespace; [`socket`]: one socket.
//! - [`policy`]: what a client may do on its own (room patterns, event rate, refusals).
//! - [`pending`]: the budget of sessions not yet connected, per node and per address.
//!
//! Knows nothing about Redis pub/sub (the cluster layer calls in through [`Gateway::namespace`]
//! and [`Namespace`]) nor about transports (it talks to an [`crate::transport::EngineSession`],
//! carried by WebSocket or HTTP long-polling).

mod connection;
mod hub;
mod namespace;
mod pending;
mod policy;
mod recovery;
mod sessions;
mod socket;

pub use connection::{HandshakeAuth, Opening, PendingAuth};
pub use hub::{Admission, Gateway, GatewayConfig, NoHooks, RoomTemplates, SocketHooks};
pub use namespace::{Namespace, Namespaces, RoomEvent};
pub use pending::{PendingFull, PendingSessions, PendingSlot};
pub use policy::{ClientPolicy, Refusal, RoomPattern};
pub use recovery::{recoverable, BoxFuture, Recovery, Restored};
pub use sessions::{Revocation, Sessions};
pub use socket::{frames, AckHandler, Room, Socket, MAX_PENDING_ACKS};
