//! Client events to backends through a Redis Stream.
//!
//! - [`writer`]: the gateway's side: every client event appended to the stream (`XADD`), acked
//!   once stored.
//! - [`reader`]: the backends' side: reading with a consumer group, acknowledging.
//!
//! The entry's fields are a contract backends rely on (README, "Client events"): `nsp`,
//! `socket`, `user` (JSON), `session`, `event`, `args` (JSON array; binary attachments as
//! `{"_placeholder":true,"num":N}`, their bytes in `bin0`, `bin1`, …), `node`, `ts` (ms).

pub mod reader;
pub mod writer;

pub use reader::{ack_events, create_group, read_events, reader_connection, InboundEvent};
pub use writer::{Forwarder, InboundOptions};
