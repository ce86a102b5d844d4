//! The `wsgate` binary: parses the command line ([`wsgate::config::Cli`]) and runs the chosen
//! command: serve (the default), `emit`, `disconnect` or `demo`.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use wsgate::cluster::Emitter;
use wsgate::config::{init_logging, Cli, Command, PublishArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Demo(args)) => {
            init_logging(wsgate::config::LogFormat::Text);
            match wsgate::demo::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("wsgate demo: {err}");
                    ExitCode::from(1)
                }
            }
        }
        Some(command) => publish(command).await,
    }
}

async fn serve(args: wsgate::config::ServeArgs) -> ExitCode {
    init_logging(args.operations.log_format);
    let wsgate::config::Settings {
        listen,
        gateway,
        http,
        cluster,
    } = match args.build() {
        Ok(built) => built,
        Err(err) => {
            tracing::error!("cannot start: {err}");
            eprintln!("wsgate: {err}");
            return ExitCode::from(2);
        }
    };
    let secrets = gateway.auth.as_ref().map_or(0, |a| a.secrets.len());
    if args.lifecycle.require_redis {
        let mut conn = cluster.publisher.clone();
        let ping = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        if !matches!(ping, Ok(Ok(_))) {
            eprintln!("wsgate: Redis at --redis-url does not answer (--require-redis): check that it runs, and the URL, password and network between them");
            return ExitCode::from(2);
        }
    }
    let server = match wsgate::Server::start(listen, gateway, http, Some(cluster)).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("wsgate: cannot listen on {listen}: {err}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        listen = %server.local_addr(),
        path = %args.listener.path,
        secrets,
        namespaces = ?args.clients.namespaces,
        allowed_origins = ?args.listener.allowed_origins,
        adapter_key = %args.cluster.redis.adapter_key,
        "wsgate listening"
    );
    shutdown_signal().await;
    let drain = args.lifecycle.drain_timeout;
    tracing::info!(connections = server.gateway().connection_count(), over = ?drain, "draining: not ready, no new connections, closing the open ones in batches");
    server.drain(drain).await;
    tracing::info!("drained; exiting");
    ExitCode::SUCCESS
}

/// `wsgate emit` / `wsgate disconnect`: one publish, one line saying whether Redis took it.
async fn publish(command: Command) -> ExitCode {
    let Some(target) = command.target() else {
        return ExitCode::from(2);
    };
    let what = match &command {
        Command::Emit(a) => format!("event {:?}", a.event),
        Command::Disconnect(_) => "disconnect".to_string(),
        Command::Demo(_) => return ExitCode::from(2),
    };
    let emitter = match connect(target).await {
        Ok(emitter) => emitter,
        Err(err) => {
            eprintln!("wsgate: cannot reach Redis at --redis-url: {err}");
            return ExitCode::from(1);
        }
    };
    let mut selected = emitter.of(&target.namespace);
    for room in &target.rooms {
        selected = selected.to(room.clone());
    }
    for room in &target.except {
        selected = selected.except(room.clone());
    }
    let published = match &command {
        Command::Emit(a) => {
            let mut args = Vec::new();
            for (i, raw) in a.data.iter().enumerate() {
                match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(json) => args.push(wsgate::protocol::adapter::from_client_value(&json, &[])),
                    Err(err) => {
                        eprintln!(
                            "wsgate: --data #{} is not JSON ({err}); quote strings: --data '\"text\"'",
                            i + 1
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            selected.emit(&a.event, args).await
        }
        Command::Disconnect(a) => selected.disconnect_sockets(!a.keep_connection).await,
        Command::Demo(_) => return ExitCode::from(2),
    };
    match published {
        Ok(published) => {
            println!("published {what} to namespace {} ({published})", target.namespace);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("wsgate: {err}");
            ExitCode::from(1)
        }
    }
}

async fn connect(target: &PublishArgs) -> Result<Emitter, String> {
    let redis = target.redis.target().map_err(|e| e.to_string())?;
    let connection = if redis.cluster {
        // The cluster client connects on first use: the publish itself says whether it could.
        redis.connect(Duration::from_secs(5)).map_err(|e| e.to_string())?
    } else {
        let client = redis.client().map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
            .map_err(|e| e.to_string())?
            .into()
    };
    Ok(Emitter::with_protocol(
        connection,
        &target.redis.adapter_key,
        target.redis.adapter_protocol(),
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
