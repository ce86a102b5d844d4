//! The Redis Streams adapter (`--adapter streams`, `@socket.io/redis-streams-adapter` 0.3) on a
//! real Redis: broadcasts as stream entries in Node's exact fields, read by every node, the
//! emitter's and other languages' XADDs, garbage entries, and a Redis connection cut while
//! entries are appended (nothing is lost: the readers resume from the last id).

use rmpv::Value as Mp;
use std::time::Duration;
use support::*;

/// Recovery off: these tests read the wire; offsets are `tests/recovery.rs`'s.
const STREAMS: [&str; 4] = ["--adapter", "streams", "--recovery-window", "0"];

/// Subscribers of the namespace's public channel: Node's server count.
async fn numsub(redis: &Redis, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = redis.cmd(&["PUBSUB", "NUMSUB", channel]).await;
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    }
}

async fn wait_for_numsub(redis: &Redis, channel: &str, count: i64) {
    for _ in 0..250 {
        if numsub(redis, channel).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{channel} never had {count} subscribers");
}

type Entry = (String, Vec<(String, String)>);

async fn entries(redis: &Redis, key: &str) -> Vec<Entry> {
    let raw: Vec<(String, Vec<String>)> = redis.cmd(&["XRANGE", key, "-", "+"]).await;
    raw.into_iter()
        .map(|(id, flat)| {
            let pairs = flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            (id, pairs)
        })
        .collect()
}

#[tokio::test]
async fn broadcasts_are_stream_entries_every_node_reads() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    let b = gateway(&redis.url(), &STREAMS).await;
    // Requests are counted by the public channel's subscribers, one per node.
    wait_for_numsub(&redis, "socket.io#/#", 2).await;
    let (mut a42, _) = connect_user(&redis, a.local_addr(), "sa", "42").await;
    let (mut b42, _) = connect_user(&redis, b.local_addr(), "sb", "42").await;
    let (mut b7, _) = connect_user(&redis, b.local_addr(), "sb7", "7").await;

    let data = vec![
        Mp::from("hello"),
        Mp::from(1),
        Mp::Map(vec![(Mp::from("a"), Mp::from("x"))]),
    ];
    a.cluster()
        .unwrap()
        .broadcast("/", selector(&["user:42"]), data)
        .await
        .unwrap();
    // Every node delivers it when it reads the entry, the publisher included.
    for client in [&mut a42, &mut b42] {
        assert_eq!(client.text().await, r#"42["hello",1,{"a":"x"}]"#);
    }
    b7.idle(Duration::from_millis(100)).await;

    // Node's exact entry: fields uid, nsp, type, data in that order, MAXLEN ~ applied.
    let appended = entries(&redis, "socket.io").await;
    assert_eq!(appended.len(), 1, "{appended:?}");
    let fields = &appended[0].1;
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["uid", "nsp", "type", "data"]);
    assert_eq!(fields[0].1.len(), 16, "uid: 16 hex digits");
    assert_eq!(fields[1].1, "/");
    assert_eq!(fields[2].1, "3");
    assert_eq!(
        fields[3].1,
        r#"{"packet":{"type":2,"data":["hello",1,{"a":"x"}]},"opts":{"rooms":["user:42"],"except":[],"flags":{}}}"#
    );

    // Binary: base64 msgpack, delivered as an attachment.
    let data = vec![Mp::from("bin"), Mp::Binary(vec![1, 2, 3])];
    a.cluster()
        .unwrap()
        .broadcast("/", selector(&["user:7"]), data)
        .await
        .unwrap();
    assert_eq!(b7.text().await, r#"451-["bin",{"_placeholder":true,"num":0}]"#);
    assert!(matches!(b7.recv().await, Received::Binary(bytes) if bytes == [1, 2, 3]));
    let appended = entries(&redis, "socket.io").await;
    assert_eq!(
        appended[1].1[3].1,
        "gqZwYWNrZXSCpHR5cGUCpGRhdGGSo2JpbsQDAQIDpG9wdHODpXJvb21zkaZ1c2VyOjemZXhjZXB0kKVmbGFnc4A="
    );
}

#[tokio::test]
async fn entries_from_emitters_and_other_languages_are_delivered_and_garbage_is_dropped() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    wait_for_numsub(&redis, "socket.io#/#", 1).await;
    let (mut client, _) = connect_user(&redis, a.local_addr(), "s1", "42").await;

    // What @socket.io/redis-streams-emitter appends (packet with nsp, opts in its order).
    let data =
        r#"{"packet":{"type":2,"data":["fromEmitter",{"k":1}],"nsp":"/"},"opts":{"rooms":[],"flags":{},"except":[]}}"#;
    let _: String = redis.append_entry("emitter", "/", "3", data).await;
    assert_eq!(client.text().await, r#"42["fromEmitter",{"k":1}]"#);

    // Garbage, an entry of another namespace and one without nsp: dropped; the next is read.
    for fields in [
        &["uid", "x", "nsp", "/", "type", "3", "data", "{not json"][..],
        &["uid", "x", "nsp", "/", "type", "3", "data", "!!!"],
        &["uid", "x", "nsp", "/", "type", "nine"],
        &["uid", "x", "nsp", "/other", "type", "3", "data", data],
        &["hello", "world"],
    ] {
        let mut args = vec!["XADD", "socket.io", "*"];
        args.extend_from_slice(fields);
        let _: String = redis.cmd(&args).await;
    }
    let join = r#"{"opts":{"rooms":["user:42"],"except":[],"flags":{}},"rooms":["vip"]}"#;
    let _: String = redis.append_entry("backend", "/", "4", join).await;
    let vip = r#"{"packet":{"type":2,"data":["vip-only"]},"opts":{"rooms":["vip"],"except":[],"flags":{}}}"#;
    let _: String = redis.append_entry("backend", "/", "3", vip).await;
    assert_eq!(client.text().await, r#"42["vip-only"]"#);
    let metrics = http(a.local_addr(), "GET", "/metrics", &[]).await.1;
    let dropped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("wsgate_adapter_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dropped, 3.0, "{metrics}");

    // `wsgate emit --adapter streams` appends the emitter's entry.
    let url = redis.url();
    let (code, out) = wsgate_cli(&[
        "emit",
        "--redis-url",
        &url,
        "--adapter",
        "streams",
        "--room",
        "user:42",
        "--event",
        "cli",
        "--data",
        "7",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("appended as stream entry"), "{out}");
    assert_eq!(client.text().await, r#"42["cli",7]"#);
    let last = entries(&redis, "socket.io").await.pop().unwrap();
    assert_eq!(last.1[0], ("uid".to_owned(), "emitter".to_owned()));
}

#[tokio::test]
async fn a_lost_redis_connection_loses_no_entry() {
    let redis = Redis::start().await;
    let a = gateway(&redis.url(), &STREAMS).await;
    wait_for_numsub(&redis, "socket.io#/#", 1).await;
    let (mut client, _) = connect_user(&redis, a.local_addr(), "s1", "42").await;
    let event = |n: usize| {
        format!(r#"{{"packet":{{"type":2,"data":["n",{n}]}},"opts":{{"rooms":[],"except":[],"flags":{{}}}}}}"#)
    };
    let _: String = redis.append_entry("b", "/", "3", &event(0)).await;
    assert_eq!(client.text().await, r#"42["n",0]"#);
    // Every connection but ours cut (the node's reader among them), entries appended meanwhile.
    let killed: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]).await;
    assert!(killed >= 1);
    for n in 1..=20 {
        let _: String = redis.append_entry("b", "/", "3", &event(n)).await;
    }
    for n in 1..=20 {
        assert_eq!(
            client.text_within(Duration::from_secs(10)).await,
            format!(r#"42["n",{n}]"#)
        );
    }
}
