//! A full gateway node (same flags as `wsgate`) that also broadcasts what it reads on stdin,
//! through the cluster adapter: one JSON object per line,
//! `{"rooms":["user:42"],"except":[],"event":"notice","args":[1,"two",{"$binary":"AQID"}]}`
//! (`{"$binary": base64}` is a binary argument). It shows the library's broadcast API and lets
//! the interop tests originate broadcasts on a gateway node.

use base64::Engine as _;
use clap::Parser;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;
use wsgate::protocol::adapter::{from_client_value, Selector};

#[derive(Deserialize)]
struct Line {
    #[serde(default = "root")]
    nsp: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    event: String,
    #[serde(default)]
    args: Vec<Value>,
}

fn root() -> String {
    "/".into()
}

fn to_msgpack(value: &Value) -> rmpv::Value {
    if let Some(b64) = value.get("$binary").and_then(Value::as_str) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
            return rmpv::Value::Binary(bytes);
        }
    }
    match value {
        Value::Array(items) => rmpv::Value::Array(items.iter().map(to_msgpack).collect()),
        other => from_client_value(other, &[]),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = wsgate::config::Cli::parse();
    wsgate::config::init_logging(cli.serve.operations.log_format);
    let settings = cli.serve.build()?;
    let server =
        wsgate::Server::start(settings.listen, settings.gateway, settings.http, Some(settings.cluster)).await?;
    let cluster = server.cluster().expect("started with a cluster").clone();
    println!("listening on {}", server.local_addr());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let parsed: Line = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(err) => {
                eprintln!("bad line: {err}");
                continue;
            }
        };
        let mut data = vec![rmpv::Value::from(parsed.event.as_str())];
        data.extend(parsed.args.iter().map(to_msgpack));
        let selector = Selector {
            rooms: parsed.rooms,
            except: parsed.except,
        };
        match cluster.broadcast(&parsed.nsp, selector, data).await {
            Ok(local) => println!("broadcast {} (local sockets: {local})", parsed.event),
            Err(err) => eprintln!("broadcast failed: {err}"),
        }
    }
    // stdin closed: keep serving until killed.
    std::future::pending::<()>().await;
    Ok(())
}
