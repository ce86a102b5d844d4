use clap::Parser;
use std::process::ExitCode;
use wsgate::config::{init_logging, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = cli.serve;
    init_logging(args.log_format);
    let (gateway, http) = match args.build() {
        Ok(built) => built,
        Err(err) => {
            tracing::error!("cannot start: {err}");
            eprintln!("wsgate: {err}");
            return ExitCode::from(2);
        }
    };
    let secrets = gateway.auth.as_ref().map_or(0, |a| a.secrets.len());
    let server = match wsgate::Server::start(args.listen, gateway, http).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("wsgate: cannot listen on {}: {err}", args.listen);
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        listen = %server.local_addr(),
        path = %args.path,
        secrets,
        namespaces = ?args.namespaces,
        allowed_origins = ?args.allowed_origins,
        "wsgate listening"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: disconnecting clients");
    server.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
