//! Every task a node spawns, and how they end: the one place shutdown can wait for.
//!
//! Tasks are spawned through [`Tasks::spawn`] with a [`TaskKind`]; each kind is counted while
//! its tasks run, so a shutdown that runs out of time can say what was still running. Session
//! tasks (one per client connection) and background tasks (the cluster's subscriber, the
//! inbound writer, store listeners, periodic checks) are tracked apart: a shutdown first waits
//! for the sessions it is draining, then cancels the background ones ([`Tasks::stopping`]) and
//! waits for those. Built on `tokio_util`'s `TaskTracker` and `CancellationToken`; knows nothing
//! of what the tasks do.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a task is, for the shutdown report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// One client's Engine.IO session.
    Session,
    /// An accepted TCP connection before (or without) becoming a session.
    Connection,
    /// An accept loop.
    Listener,
    /// The cluster adapter's subscriber, delivery and response tasks.
    Cluster,
    /// The inbound stream writer.
    InboundWriter,
    /// The session store's change listener (Postgres LISTEN) and its dispatcher.
    StoreListener,
    /// Periodic and one-off session checks (revalidation, rechecks, touches).
    SessionCheck,
    /// Anything an embedding application spawns through the node (the demo's publishers).
    Application,
}

impl TaskKind {
    const ALL: [TaskKind; 8] = [
        TaskKind::Session,
        TaskKind::Connection,
        TaskKind::Listener,
        TaskKind::Cluster,
        TaskKind::InboundWriter,
        TaskKind::StoreListener,
        TaskKind::SessionCheck,
        TaskKind::Application,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Session => "session",
            TaskKind::Connection => "connection",
            TaskKind::Listener => "listener",
            TaskKind::Cluster => "cluster",
            TaskKind::InboundWriter => "inbound_writer",
            TaskKind::StoreListener => "store_listener",
            TaskKind::SessionCheck => "session_check",
            TaskKind::Application => "application",
        }
    }

    fn is_session(self) -> bool {
        matches!(self, TaskKind::Session | TaskKind::Connection)
    }
}

/// The tasks of one node. Cheap to clone; every clone tracks into the same sets.
#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Sessions and connections are counted by their trackers (no per-task counter: there are
    /// hundreds of thousands, and a session task's future is kept small).
    sessions: TaskTracker,
    connections: TaskTracker,
    background: TaskTracker,
    stop: CancellationToken,
    running: [AtomicUsize; TaskKind::ALL.len()],
}

/// Decrements its kind's count when the task ends (or is dropped unfinished).
struct Running {
    inner: Arc<Inner>,
    kind: TaskKind,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.running[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many tasks of each kind run (kinds with none are left out): what a shutdown starts
/// with, and what was still running when its deadline passed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TaskCounts(pub Vec<(TaskKind, usize)>);

impl TaskCounts {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for TaskCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        for (i, (kind, n)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{n} {}", kind.as_str())?;
        }
        Ok(())
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` on the runtime, tracked under `kind`.
    pub fn spawn<F>(&self, kind: TaskKind, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match kind {
            TaskKind::Session => self.inner.sessions.spawn(task),
            TaskKind::Connection => self.inner.connections.spawn(task),
            _ => {
                self.inner.running[kind as usize].fetch_add(1, Ordering::Relaxed);
                let running = Running {
                    inner: self.inner.clone(),
                    kind,
                };
                self.inner.background.spawn(async move {
                    let _running = running;
                    task.await
                })
            }
        }
    }

    /// `session` (a client session's future, run by a task someone else spawned), tracked as
    /// a [`TaskKind::Session`]. Adds one pointer to the future.
    pub fn track_session<F: Future>(&self, session: F) -> impl Future<Output = F::Output> {
        self.inner.sessions.track_future(session)
    }

    /// Cancelled when the node stops: background tasks end their loops on it.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Tasks of `kind` running now.
    pub fn running(&self, kind: TaskKind) -> usize {
        match kind {
            TaskKind::Session => self.inner.sessions.len(),
            TaskKind::Connection => self.inner.connections.len(),
            _ => self.inner.running[kind as usize].load(Ordering::Relaxed),
        }
    }

    /// Waits up to `deadline` for every session and connection task to end (the caller closed
    /// them); returns what is left.
    pub async fn wait_for_sessions(&self, deadline: Duration) -> TaskCounts {
        self.inner.sessions.close();
        self.inner.connections.close();
        let both = async {
            self.inner.sessions.wait().await;
            self.inner.connections.wait().await;
        };
        let _ = tokio::time::timeout(deadline, both).await;
        self.unfinished(|kind| kind.is_session())
    }

    /// Cancels the background tasks and waits up to `deadline` for every task to end; returns
    /// what is left. New tasks can still be spawned, and are tracked, but are not waited for.
    pub async fn stop(&self, deadline: Duration) -> TaskCounts {
        self.inner.stop.cancel();
        self.inner.sessions.close();
        self.inner.connections.close();
        self.inner.background.close();
        let both = async {
            self.inner.sessions.wait().await;
            self.inner.connections.wait().await;
            self.inner.background.wait().await;
        };
        let _ = tokio::time::timeout(deadline, both).await;
        self.unfinished(|_| true)
    }

    /// Every kind of task running now.
    pub fn counts(&self) -> TaskCounts {
        self.unfinished(|_| true)
    }

    fn unfinished(&self, which: impl Fn(TaskKind) -> bool) -> TaskCounts {
        TaskCounts(
            TaskKind::ALL
                .into_iter()
                .filter(|kind| which(*kind))
                .map(|kind| (kind, self.running(kind)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_background_tasks_and_reports_stragglers() {
        let tasks = Tasks::new();
        let stop = tasks.stopping();
        tasks.spawn(TaskKind::Cluster, async move { stop.cancelled().await });
        tasks.spawn(TaskKind::Session, std::future::pending::<()>());
        assert_eq!(tasks.running(TaskKind::Cluster), 1);
        let left = tasks.wait_for_sessions(Duration::from_millis(20)).await;
        assert_eq!(left, TaskCounts(vec![(TaskKind::Session, 1)]));
        let left = tasks.stop(Duration::from_millis(50)).await;
        assert_eq!(left.to_string(), "1 session");
        assert_eq!(tasks.running(TaskKind::Cluster), 0);
    }
}
