//! Connection state recovery on the Redis Streams adapter, with real Redis and several gateway
//! nodes (in-process and real processes killed with SIGKILL): a reconnect with `{pid, offset}` on
//! any node gets its socket id, rooms and missed events back, in order, before the CONNECT
//! reply; never bypassing authentication; bounded; exactly once under a steady broadcast across
//! repeated moves between nodes.

use std::time::Duration;
use support::*;
use wsgate::protocol::streams::SessionRecord;

const STREAMS: [&str; 2] = ["--adapter", "streams"];

/// Opens a connection with `cookie` and sends CONNECT for `/` with `auth`; the server's answer.
async fn connect_with(addr: std::net::SocketAddr, cookie: &str, auth: &str) -> (Client, String) {
    let (mut client, _) = Client::open(addr, &[("cookie", cookie)]).await.expect("upgrade");
    client.send(&format!("40{auth}")).await;
    let answer = client.text().await;
    (client, answer)
}

/// `(sid, pid)` of a `40{…}` answer.
fn ids(answer: &str) -> (String, String) {
    let json: serde_json::Value = answer
        .strip_prefix("40")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("expected 40{{…}}, got {answer:?}"));
    let text = |k: &str| {
        json[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {answer}"))
            .to_owned()
    };
    (text("sid"), text("pid"))
}

/// The arguments of a `42[…]` event.
fn args(frame: &str) -> Vec<serde_json::Value> {
    let json = frame
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("expected an event, got {frame:?}"));
    serde_json::from_str(json).unwrap()
}

/// The last argument of an event: its offset.
fn offset(frame: &str) -> String {
    args(frame).last().and_then(|o| o.as_str()).unwrap().to_owned()
}

/// What a backend appends: an event to `rooms` (`[]`: everyone).
async fn broadcast(redis: &Redis, rooms: &str, event: &str, flags: &str) -> String {
    let data = format!(
        r#"{{"packet":{{"type":2,"data":["{event}"]}},"opts":{{"rooms":{rooms},"except":[],"flags":{flags}}}}}"#
    );
    redis.append_entry("backend", "/", "3", &data).await
}

async fn record(redis: &Redis, pid: &str) -> Option<(SessionRecord, i64)> {
    let key = format!("sio:session:{pid}");
    let bytes: Option<Vec<u8>> = redis.cmd(&["GET", &key]).await;
    let ttl: i64 = redis.cmd(&["PTTL", &key]).await;
    Some((SessionRecord::decode(&bytes?).unwrap(), ttl))
}

async fn wait_for_record(redis: &Redis, pid: &str, done: impl Fn(&SessionRecord, i64) -> bool) -> SessionRecord {
    for _ in 0..250 {
        if let Some((record, ttl)) = record(redis, pid).await {
            if done(&record, ttl) {
                return record;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]).await;
    panic!(
        "the record of {pid} never got there: {:?} (keys: {keys:?})",
        record(redis, pid).await
    );
}

fn metric(metrics: &str, line: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    http(addr, "GET", "/metrics", &[]).await.1
}

#[tokio::test]
async fn a_dropped_client_recovers_on_another_node_with_what_it_missed() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    let b = gateway(&redis.url(), &STREAMS).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);
    let (mut client, answer) = connect_with(a.local_addr(), &cookie, "").await;
    let (sid, pid) = ids(&answer);
    assert_eq!(pid.len(), 20, "{answer}");

    // A backend puts the socket in a room; an event there gives the client its offset.
    let join = format!(r#"{{"opts":{{"rooms":["{sid}"],"except":[],"flags":{{}}}},"rooms":["game"]}}"#);
    let _: String = redis.append_entry("backend", "/", "4", &join).await;
    let id0 = broadcast(&redis, r#"["game"]"#, "e0", "{}").await;
    let frame = client.text().await;
    assert_eq!(args(&frame)[0], "e0");
    assert_eq!(offset(&frame), id0, "the offset is the stream entry id");
    // Volatile broadcasts carry no offset (as Node).
    broadcast(&redis, r#"["game"]"#, "quiet", r#"{"volatile":true}"#).await;
    assert_eq!(client.text().await, r#"42["quiet"]"#);

    // The connection drops without a close: recoverable; the record keeps the rooms, for the
    // window (2 minutes), written at the close.
    drop(client);
    let kept = wait_for_record(&redis, &pid, |r, ttl| {
        r.rooms.contains(&"game".to_owned()) && ttl <= 120_000
    })
    .await;
    assert_eq!(kept.sid, sid);
    assert!(
        kept.rooms.contains(&sid) && kept.rooms.contains(&"user:42".to_owned()),
        "{kept:?}"
    );

    // Missed meanwhile: two for the room, one for another room, one for everyone.
    let id1 = broadcast(&redis, r#"["game"]"#, "e1", "{}").await;
    broadcast(&redis, r#"["elsewhere"]"#, "not-for-it", "{}").await;
    let id2 = broadcast(&redis, "[]", "e2", "{}").await;
    let id3 = broadcast(&redis, r#"["user:42"]"#, "e3", "{}").await;

    let auth = format!(r#"{{"pid":"{pid}","offset":"{id0}"}}"#);
    let (mut back, first) = connect_with(b.local_addr(), &cookie, &auth).await;
    // Replayed in order, each with its offset, before the CONNECT reply, which repeats the ids
    // (the volatile one too, as Node replays it).
    let mut replayed = vec![first];
    for _ in 0..4 {
        replayed.push(back.text().await);
    }
    let events: Vec<(String, String)> = replayed[..4]
        .iter()
        .map(|f| (args(f)[0].as_str().unwrap().to_owned(), offset(f)))
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["quiet", "e1", "e2", "e3"], "{replayed:?}");
    assert_eq!(events[1].1, id1);
    assert_eq!(events[2].1, id2);
    assert_eq!(events[3].1, id3);
    assert_eq!(ids(&replayed[4]), (sid.clone(), pid.clone()));

    // Back in its rooms on the new node, live, exactly once.
    let id4 = broadcast(&redis, r#"["game"]"#, "e4", "{}").await;
    let live = back.text().await;
    assert_eq!((args(&live)[0].as_str().unwrap(), offset(&live)), ("e4", id4.clone()));
    back.idle(Duration::from_millis(200)).await;
    let m = metrics(b.local_addr()).await;
    assert_eq!(metric(&m, r#"wsgate_recoveries_total{reason="recovered"}"#), 1.0, "{m}");
    assert_eq!(
        metric(&m, r#"wsgate_recovery_replayed_total{reason="events"}"#),
        4.0,
        "{m}"
    );

    // Repeatable: it drops again and recovers again, on the first node.
    drop(back);
    wait_for_record(&redis, &pid, |r, ttl| {
        r.rooms.contains(&"game".to_owned()) && ttl <= 120_000
    })
    .await;
    broadcast(&redis, r#"["game"]"#, "e5", "{}").await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"{id4}"}}"#);
    let (mut again, first) = connect_with(a.local_addr(), &cookie, &auth).await;
    assert_eq!(args(&first)[0], "e5");
    assert_eq!(ids(&again.text().await), (sid, pid));
}

#[tokio::test]
async fn recovery_never_bypasses_authentication() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);
    let (mut client, answer) = connect_with(a.local_addr(), &cookie, "").await;
    let (sid, pid) = ids(&answer);
    let id0 = broadcast(&redis, r#"["user:42"]"#, "e0", "{}").await;
    client.text().await;
    drop(client);
    wait_for_record(&redis, &pid, |_, ttl| ttl <= 120_000).await;
    broadcast(&redis, r#"["user:42"]"#, "private", "{}").await;

    // Logged out while away: refused like any handshake, nothing replayed.
    let _: i64 = redis.cmd(&["DEL", "sess:s1"]).await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"{id0}"}}"#);
    let (_refused, answer) = connect_with(a.local_addr(), &cookie, &auth).await;
    assert_eq!(answer, r#"44{"message":"Authentication error"}"#);

    // Another user logged in on the same browser: a fresh socket, never the old one's rooms
    // or events.
    redis.login("s2", "7").await;
    let (mut other, answer) = connect_with(a.local_addr(), &cookie_for("s2", SECRET), &auth).await;
    let (new_sid, new_pid) = ids(&answer);
    assert_ne!((new_sid.as_str(), new_pid.as_str()), (sid.as_str(), pid.as_str()));
    broadcast(&redis, r#"["user:42"]"#, "still-private", "{}").await;
    broadcast(&redis, r#"["user:7"]"#, "for-7", "{}").await;
    assert_eq!(args(&other.text().await)[0], "for-7");
    let m = metrics(a.local_addr()).await;
    assert_eq!(
        metric(&m, r#"wsgate_recoveries_total{reason="refused_auth"}"#),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn recovery_is_bounded_and_falls_back_to_a_fresh_socket() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &["--adapter", "streams", "--recovery-max-replay", "5"]).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);

    // Drops and returns after `missed` events with `offset` (the real one unless given).
    async fn attempt(
        redis: &Redis,
        addr: std::net::SocketAddr,
        cookie: &str,
        missed: usize,
        bad: Option<&str>,
    ) -> (Client, String, String) {
        let (mut client, answer) = connect_with(addr, cookie, "").await;
        let (sid, pid) = ids(&answer);
        let id0 = broadcast(redis, "[]", "first", "{}").await;
        client.text().await;
        drop(client);
        wait_for_record(redis, &pid, |_, ttl| ttl <= 120_000).await;
        for _ in 0..missed {
            broadcast(redis, "[]", "missed", "{}").await;
        }
        let offset = bad.unwrap_or(&id0).to_owned();
        let auth = format!(r#"{{"pid":"{pid}","offset":"{offset}"}}"#);
        let (client, answer) = connect_with(addr, cookie, &auth).await;
        (client, sid, answer)
    }

    // More missed than --recovery-max-replay: a fresh socket, in its rooms as on any connect.
    let (mut client, old_sid, answer) = attempt(&redis, a.local_addr(), &cookie, 6, None).await;
    assert_ne!(ids(&answer).0, old_sid, "{answer}");
    broadcast(&redis, r#"["user:42"]"#, "to-user", "{}").await;
    assert_eq!(args(&client.text().await)[0], "to-user");
    // Exactly max: recovered.
    let (_client, old_sid, answer) = attempt(&redis, a.local_addr(), &cookie, 5, None).await;
    assert!(answer.starts_with("42"), "{answer}");
    let _ = old_sid;
    // A malformed offset, and an offset trimmed away.
    let (_client, old_sid, answer) = attempt(&redis, a.local_addr(), &cookie, 0, Some("x-1")).await;
    assert_ne!(ids(&answer).0, old_sid);
    let (mut client, answer) = connect_with(a.local_addr(), &cookie, "").await;
    let (_, pid) = ids(&answer);
    let id0 = broadcast(&redis, "[]", "first", "{}").await;
    client.text().await;
    drop(client);
    wait_for_record(&redis, &pid, |_, ttl| ttl <= 120_000).await;
    let _: i64 = redis.cmd(&["XTRIM", "socket.io", "MAXLEN", "0"]).await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"{id0}"}}"#);
    let (_client, answer) = connect_with(a.local_addr(), &cookie, &auth).await;
    assert!(answer.starts_with("40"), "{answer}");
    // Unknown pid.
    let (_client, answer) = connect_with(a.local_addr(), &cookie, r#"{"pid":"nope","offset":"1-0"}"#).await;
    assert!(answer.starts_with("40"), "{answer}");

    let m = metrics(a.local_addr()).await;
    for (outcome, n) in [
        ("too_many", 1.0),
        ("recovered", 1.0),
        ("bad_offset", 1.0),
        ("trimmed", 1.0),
        ("expired", 1.0),
    ] {
        assert_eq!(
            metric(&m, &format!(r#"wsgate_recoveries_total{{reason="{outcome}"}}"#)),
            n,
            "{outcome}: {m}"
        );
    }
}

#[tokio::test]
async fn a_node_killed_with_sigkill_leaves_its_sockets_recoverable() {
    let redis = Redis::start().await;
    let doomed = GatewayProcess::start(&redis.url(), &STREAMS).await;
    let other = gateway(&redis.url(), &STREAMS).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);
    let (mut client, answer) = connect_with(doomed.addr, &cookie, "").await;
    let (sid, pid) = ids(&answer);
    client.send(r#"42["join","lobby"]"#).await;
    let id0 = broadcast(&redis, r#"["user:42"]"#, "e0", "{}").await;
    assert_eq!(offset(&client.text().await), id0);
    // Written while it lives (within a second of a change), for longer than the window.
    let record = wait_for_record(&redis, &pid, |_, ttl| ttl > 120_000).await;
    assert_eq!(record.sid, sid);

    drop(doomed); // SIGKILL: nothing is written at the end
    let id1 = broadcast(&redis, r#"["user:42"]"#, "e1", "{}").await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"{id0}"}}"#);
    let (mut back, first) = connect_with(other.local_addr(), &cookie, &auth).await;
    assert_eq!(offset(&first), id1);
    assert_eq!(ids(&back.text().await), (sid, pid));
    drop(client);
}

#[tokio::test]
async fn exactly_once_and_in_order_under_a_steady_broadcast_across_moves() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    let b = gateway(&redis.url(), &STREAMS).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (client, stop) = (redis.client(), stop.clone());
        tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = format!(
                    r#"{{"packet":{{"type":2,"data":["n",{n}]}},"opts":{{"rooms":[],"except":[],"flags":{{}}}}}}"#
                );
                let _: String = redis::cmd("XADD")
                    .arg("socket.io")
                    .arg("*")
                    .arg(&["uid", "backend", "nsp", "/", "type", "3", "data"])
                    .arg(data)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut last_offset = String::new();
    let mut pid = String::new();
    let read = |client: &mut Client, frame: String, seen: &mut Vec<u64>, last: &mut String| {
        let _ = client;
        let a = args(&frame);
        seen.push(a[1].as_u64().unwrap());
        *last = a[2].as_str().unwrap().to_owned();
    };
    for round in 0..6 {
        let node = if round % 2 == 0 { a.local_addr() } else { b.local_addr() };
        let auth = if round == 0 {
            String::new()
        } else {
            format!(r#"{{"pid":"{pid}","offset":"{last_offset}"}}"#)
        };
        let (mut client, mut frame) = connect_with(node, &cookie, &auth).await;
        while frame.starts_with("42") {
            read(&mut client, frame, &mut seen, &mut last_offset);
            frame = client.text().await;
        }
        let (_, p) = ids(&frame);
        if round > 0 {
            assert_eq!(p, pid, "round {round}: recovered");
        }
        pid = p;
        // Live for a while (past the first record write), then cut.
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        while tokio::time::Instant::now() < until {
            let frame = client.text().await;
            read(&mut client, frame, &mut seen, &mut last_offset);
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
    let first = seen[0];
    let expected: Vec<u64> = (first..first + seen.len() as u64).collect();
    assert_eq!(seen, expected, "no gap, no duplicate, in order");
}

#[tokio::test]
async fn sockets_drained_on_sigterm_recover_on_the_other_nodes() {
    let redis = Redis::start().await;
    let mut leaving = GatewayProcess::start(&redis.url(), &["--adapter", "streams", "--drain-timeout", "0"]).await;
    let staying = gateway(&redis.url(), &STREAMS).await;
    redis.login("s1", "42").await;
    let cookie = cookie_for("s1", SECRET);
    let (mut client, answer) = connect_with(leaving.addr, &cookie, "").await;
    let (sid, pid) = ids(&answer);
    let id0 = broadcast(&redis, r#"["user:42"]"#, "e0", "{}").await;
    assert_eq!(offset(&client.text().await), id0);

    leaving.signal_term();
    // The drain closes the connection (1001, going away) and writes the record for the window.
    assert!(closed_within(&mut client, Duration::from_secs(10)).await);
    assert_eq!(leaving.wait_exit(Duration::from_secs(15)), Some(0));
    let record = wait_for_record(&redis, &pid, |_, ttl| ttl <= 120_000).await;
    assert!(record.rooms.contains(&"user:42".to_owned()), "{record:?}");

    let id1 = broadcast(&redis, r#"["user:42"]"#, "e1", "{}").await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"{id0}"}}"#);
    let (mut back, first) = connect_with(staying.local_addr(), &cookie, &auth).await;
    assert_eq!(offset(&first), id1);
    assert_eq!(ids(&back.text().await), (sid, pid));
}
