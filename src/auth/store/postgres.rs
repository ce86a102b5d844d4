//! connect-pg-simple: the record is the `sess` column of the session table's row for `sid`,
//! valid while `expire >= now()` (connect-pg-simple's own `get` filter; expired rows linger
//! until its pruning deletes them). Prepared statements on a bounded pool.
//!
//! With `--pg-notify`, a trigger on the table (`deploy/postgres/session-notify.sql`) sends the
//! session id on channel `wsgate_session` whenever a row is deleted or its `sess` changes; one
//! extra connection LISTENs and reports those ids, so a logout closes sockets within a second.

use super::error::{describe, StoreError, StoreEvent};
use crate::tasks::{TaskKind, Tasks};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

/// The channel the trigger in `deploy/postgres/session-notify.sql` notifies.
pub const NOTIFY_CHANNEL: &str = "wsgate_session";

/// Where connect-pg-simple keeps sessions.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (libpq's URL and key=value forms; no TLS).
    pub url: String,
    /// connect-pg-simple's `tableName` (default `session`).
    pub table: String,
    /// connect-pg-simple's `schemaName` (none: the search path decides).
    pub schema: Option<String>,
    /// Connections open at most.
    pub pool_size: usize,
    /// LISTEN for the session-change trigger's notifications.
    pub notify: bool,
    /// How often the LISTEN connection is checked with a query (a dead peer is noticed by a
    /// query that gets no answer within the same time).
    pub notify_keepalive: Duration,
}

#[derive(Clone)]
pub(super) struct PostgresStore {
    pool: deadpool_postgres::Pool,
    config: std::sync::Arc<tokio_postgres::Config>,
    /// `"schema"."table"`, quoted (also valid `regclass` input, to look for the trigger).
    table: String,
    notify: bool,
    notify_keepalive: Duration,
}

/// An SQL identifier, quoted (any text is a valid name).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresStore {
    pub(super) fn new(options: PostgresOptions, timeout: Duration) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| StoreError::Address(format!("bad --session-store-url for postgres: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        let table = match &options.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&options.table)),
            None => quote_ident(&options.table),
        };
        Ok(PostgresStore {
            pool,
            config: std::sync::Arc::new(config),
            table,
            notify: options.notify,
            notify_keepalive: options.notify_keepalive,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    pub(super) async fn record(&self, sid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let query = format!(
            "SELECT sess::text FROM {} WHERE sid = $1 AND expire >= now()",
            self.table
        );
        let statement = client.prepare_cached(&query).await?;
        let row = client.query_opt(&statement, &[&sid]).await?;
        Ok(row.map(|row| row.get::<_, String>(0).into_bytes()))
    }

    pub(super) async fn records(&self, sids: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let client = self.client().await?;
        let query = format!(
            "SELECT sid::text, sess::text FROM {} WHERE sid = ANY($1) AND expire >= now()",
            self.table
        );
        let statement = client.prepare_cached(&query).await?;
        let rows = client.query(&statement, &[&sids]).await?;
        let mut found: std::collections::HashMap<String, String> =
            rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
        Ok(sids
            .iter()
            .map(|sid| found.remove(*sid).map(String::into_bytes))
            .collect())
    }

    /// Moves `expire` as connect-pg-simple's `touch` does; an expired or deleted row stays so.
    pub(super) async fn touch(&self, sid: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let query = format!(
            "UPDATE {} SET expire = now() + make_interval(secs => $2) WHERE sid = $1 AND expire >= now()",
            self.table
        );
        let statement = client.prepare_cached(&query).await?;
        let updated = client.execute(&statement, &[&sid, &(ttl_secs as f64)]).await?;
        Ok(updated == 1)
    }

    /// Starts the LISTEN task when `--pg-notify` asked for it.
    pub(super) fn watch(&self, tasks: &Tasks) -> Option<mpsc::Receiver<StoreEvent>> {
        if !self.notify {
            return None;
        }
        let (events, receiver) = mpsc::channel(4096);
        let store = self.clone();
        tasks.spawn(
            TaskKind::StoreListener,
            async move { store.listen_forever(events).await },
        );
        Some(receiver)
    }

    /// Keeps a LISTEN connection up while anyone listens: after a failure it reconnects with
    /// backoff (100 ms doubling to 5 s, back to 100 ms once a connection held), warning once
    /// per outage and at debug for the retries.
    async fn listen_forever(self, events: mpsc::Sender<StoreEvent>) {
        let mut backoff = Duration::from_millis(100);
        let mut ever_up = false;
        let mut warned = false;
        while !events.is_closed() {
            let mut held = false;
            let why = self.listen(&events, &mut ever_up, &mut held).await;
            if events.is_closed() {
                return;
            }
            if held {
                backoff = Duration::from_millis(100);
                warned = false;
            }
            if warned {
                tracing::debug!(reason = %why, retry_in = ?backoff, "Postgres LISTEN connection still down");
            } else {
                tracing::warn!(reason = %why, retry_in = ?backoff, "Postgres LISTEN connection for session changes lost: logouts close sockets at the next --revalidate-interval until it is back");
                warned = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One LISTEN connection, until it fails; returns why.
    /// `held`: the connection was set up and listening (whatever ended it).
    async fn listen(&self, events: &mpsc::Sender<StoreEvent>, was_up: &mut bool, held: &mut bool) -> String {
        let mut config = (*self.config).clone();
        // Named, so a DBA can tell this connection from the lookups' pool.
        config.application_name("wsgate-session-notify");
        let connect = tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls));
        let (client, mut connection) = match connect.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return format!("postgres: {}", describe(&e)),
            Err(_) => return "connect timed out".into(),
        };
        // The connection must be polled for the client's queries to complete; notifications
        // arrive through the same polling.
        let driver = async {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        // An empty payload: the table was truncated, every session may be gone.
                        let event = match n.payload() {
                            "" => StoreEvent::Resync,
                            sid => StoreEvent::Changed(sid.to_owned()),
                        };
                        if events.send(event).await.is_err() {
                            return "stopped".to_owned();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("postgres: {}", describe(&e)),
                    None => return "connection closed".to_owned(),
                }
            }
        };
        tokio::pin!(driver);
        let setup = async {
            client
                .batch_execute(&format!("LISTEN {}", quote_ident(NOTIFY_CHANNEL)))
                .await
                .map_err(|e| format!("postgres: {}", describe(&e)))?;
            let trigger = client
                .query_opt(
                    "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = 'wsgate_session_notify'",
                    &[&self.table],
                )
                .await
                .map_err(|e| format!("postgres: {}", describe(&e)))?;
            Ok::<bool, String>(trigger.is_some())
        };
        let has_trigger = tokio::select! {
            why = &mut driver => return why,
            setup = setup => match setup {
                Ok(found) => found,
                Err(why) => return why,
            },
        };
        if has_trigger {
            tracing::info!(table = %self.table, channel = NOTIFY_CHANNEL, "listening for session changes in Postgres");
        } else {
            tracing::error!(table = %self.table, "--pg-notify is set but the session table has no wsgate_session_notify trigger: install deploy/postgres/session-notify.sql, or logouts close sockets only at the next --revalidate-interval");
        }
        if *was_up {
            // Notifications sent while we were away are lost: every session is read again.
            let _ = events.send(StoreEvent::Resync).await;
        }
        *was_up = true;
        *held = true;
        // A dead peer is noticed by a query that gets no answer. The query runs beside the
        // connection's driver, which must keep being polled for the answer to arrive (awaiting
        // it alone left the driver unpolled: no keep-alive ever completed, and the connection
        // was dropped as dead after every timeout).
        let every = self.notify_keepalive;
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut keepalive: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>>> = None;
        loop {
            tokio::select! {
                why = &mut driver => return why,
                () = events.closed() => return "stopped".into(),
                _ = tick.tick(), if keepalive.is_none() => {
                    keepalive = Some(Box::pin(tokio::time::timeout(every, client.simple_query("SELECT 1"))));
                }
                answered = async { keepalive.as_mut().expect("polled only while set").await }, if keepalive.is_some() => {
                    keepalive = None;
                    match answered {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("postgres: {}", describe(&e)),
                        Err(_) => return format!("no answer to a keep-alive query within {every:?}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("session"), "\"session\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
