//! The WebSocket carrier: one Engine.IO packet per frame, served by the session's task with one
//! `select!` over the socket, the outbox and the session's timer (next ping, pong deadline or
//! connect deadline, whichever is first). Everything queued when the task wakes goes out in one
//! write (tungstenite's 8 KiB write buffer; see `http::configure`): coalescing costs no
//! latency, since nothing waits for more frames to arrive.

use super::outbox::Frame;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use std::time::Duration;

use super::close::CloseReason;

pub(super) async fn write_all(ws: &mut WebSocket, frames: impl IntoIterator<Item = Frame>) -> Result<(), axum::Error> {
    for frame in frames {
        ws.feed(to_message(frame)).await?;
    }
    ws.flush().await
}

/// Closes a WebSocket that will carry no session (e.g. a second upgrade of the same session).
pub(super) async fn refuse(mut ws: WebSocket) {
    let close = CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(close)))).await;
}

pub(super) fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text),
        Frame::Binary(data) => Message::Binary(data),
    }
}

pub(super) fn read_error(err: axum::Error) -> CloseReason {
    match err.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => CloseReason::PayloadTooLarge,
        // The TCP connection ended without a close frame (a phone changing networks, a proxy
        // timing out): Node's "transport close", which a client recovers from.
        Some(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
            CloseReason::TransportClose
        }
        Some(tungstenite::Error::Protocol(_)) => CloseReason::ParseError,
        Some(tungstenite::Error::Utf8(_)) => CloseReason::ParseError,
        Some(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => CloseReason::TransportClose,
        _ => CloseReason::TransportError,
    }
}
