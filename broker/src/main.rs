//! The `sluice-broker` binary: parse the configuration, log it, open the data directory,
//! listen, and serve until SIGTERM or SIGINT, then shut down gracefully (exit 0).

use std::process::ExitCode;

use sluice_broker::{config, Broker, ConfigLayer};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft's warnings and its replication, vote and shutdown errors are about
            // peers that do not answer, which a restart of any voter causes; sluice logs its
            // own account of the controller instead. RUST_LOG=info,openraft=info shows them.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,openraft=error,openraft::replication=off,openraft::raft::raft_inner=off,\
                 openraft::core::raft_core=off"
                    .into()
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match config::resolve(ConfigLayer::parse_with_defaults()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-broker")
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: sluice_broker::BrokerConfig) -> Result<(), sluice_broker::BrokerError> {
    tracing::info!(
        "effective configuration: {}",
        serde_json::to_string(&config).unwrap_or_default()
    );
    let listener = TcpListener::bind(config.listen).await.map_err(|source| {
        sluice_broker::BrokerError::Bind {
            address: config.listen.to_string(),
            source,
        }
    })?;
    let kafka = bind_kafka(&config).await?;
    let http = bind_http(&config).await?;
    let broker = Broker::open(config).await?;
    if let Some(http) = http {
        tracing::info!(
            "HTTP admin (/metrics, /health, /ready): listening on {}",
            http.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        // Before `run`: `/ready` answers 503 while a single node waits to be ready. It
        // stops accepting when shutdown begins.
        let stopping = broker.stopping();
        tokio::spawn(sluice_broker::http::serve(
            std::sync::Arc::clone(&broker),
            http,
            stopping,
        ));
    }
    if let Some(kafka) = &kafka {
        tracing::info!(
            "Kafka clients: listening on {}{}",
            kafka
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            transport(&broker.config, broker.config.kafka_tls)
        );
    }
    tracing::info!(
        "sluice-broker node {} listening on {}{} (data in {})",
        broker.config.node_id,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        transport(&broker.config, broker.config.native_tls),
        broker.config.data_dir.display()
    );
    let listeners = sluice_broker::server::Listeners {
        native: listener,
        kafka,
    };
    sluice_broker::run(broker, listeners, shutdown_signal()).await;
    Ok(())
}

/// How a listener serves, for its start-up line: nothing for plain TCP.
fn transport(config: &sluice_broker::BrokerConfig, tls: bool) -> &'static str {
    match (tls, config.tls_client_ca_file.is_some()) {
        (false, _) => "",
        (true, false) => " with TLS",
        (true, true) => " with TLS, client certificates required",
    }
}

/// Binds the Kafka listener, if it is on. An address the user chose must be bound; the
/// default one (127.0.0.1:9092) may be taken by another broker on the same host, and then
/// this broker serves only the native protocol, with a warning that says how to change it.
async fn bind_kafka(
    config: &sluice_broker::BrokerConfig,
) -> Result<Option<TcpListener>, sluice_broker::BrokerError> {
    let Some(address) = config.kafka_listen else {
        return Ok(None);
    };
    match TcpListener::bind(address).await {
        Ok(listener) => Ok(Some(listener)),
        Err(source) if config.kafka_listen_explicit => Err(sluice_broker::BrokerError::Bind {
            address: address.to_string(),
            source,
        }),
        Err(e) => {
            tracing::warn!(
                "the Kafka listener's default address {address} is not available ({e}); this \
                 broker serves no Kafka clients. Give it another with --kafka-listen HOST:PORT, \
                 or turn it off with --kafka-listen off"
            );
            Ok(None)
        }
    }
}

/// Binds the HTTP admin listener, if it is on. As with the Kafka listener, an address the
/// user chose must be bound, and the default one (127.0.0.1:9644) being taken by another
/// broker on the same host only turns it off, with a warning.
async fn bind_http(
    config: &sluice_broker::BrokerConfig,
) -> Result<Option<TcpListener>, sluice_broker::BrokerError> {
    let Some(address) = config.http_listen else {
        return Ok(None);
    };
    match TcpListener::bind(address).await {
        Ok(listener) => Ok(Some(listener)),
        Err(source) if config.http_listen_explicit => Err(sluice_broker::BrokerError::Bind {
            address: address.to_string(),
            source,
        }),
        Err(e) => {
            tracing::warn!(
                "the HTTP admin listener's default address {address} is not available ({e}); \
                 this broker serves no /metrics, /health or /ready. Give it another with \
                 --http-listen HOST:PORT, or turn it off with --http-listen off"
            );
            Ok(None)
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
