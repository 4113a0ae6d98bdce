//! `sluice`: start-up as a sequence. Load and validate the settings (every problem at
//! once, exit 64), connect the source (exit 69 when the broker or topic is unusable),
//! bind, serve, wait for SIGTERM/SIGINT, drain within the deadline, exit 0.

use std::process::ExitCode;

use sluice::app::Gateway;
use sluice::config::{Command, Config, LogFormat, Options, TokenArgs};
use tokio_util::sync::CancellationToken;

/// sysexits.h: the settings are wrong.
const EXIT_CONFIG: u8 = 64;
/// sysexits.h: a service Sluice depends on is unavailable.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let options = match Options::load() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::Token(args)) = &options.command {
        return print_token(&options, args);
    }
    let config = match Config::from_options(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// `sluice token`: a client token signed with the configured secret, on stdout.
fn print_token(options: &Options, args: &TokenArgs) -> ExitCode {
    let Some(secret) = options.jwt_secret.as_ref().filter(|s| !s.expose().is_empty()) else {
        eprintln!("config error: --jwt-secret / SLUICE_JWT_SECRET: required to sign a token (the gateway must have the same one)");
        return ExitCode::from(EXIT_CONFIG);
    };
    if secret.expose().len() < 32 {
        eprintln!("config error: --jwt-secret / SLUICE_JWT_SECRET: must be at least 32 bytes long");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}", sluice::auth::mint(secret, &args.sub, args.keys.as_deref(), args.ttl));
    ExitCode::SUCCESS
}

async fn run(config: Config) -> ExitCode {
    let shutdown = CancellationToken::new();
    let gateway = match Gateway::start(&config, shutdown.clone()).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let listener = match sluice::server::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --port / PORT: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let admin = match config.admin.addr {
        None => None,
        Some(addr) => match sluice::server::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: --admin-addr / SLUICE_ADMIN_ADDR: cannot listen on {addr}: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        },
    };
    let addr = listener.local_addr().unwrap_or(config.listen);
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    // Printed, not logged: these lines are for the person who started Sluice, and the
    // generated password must not end up in a log pipeline.
    if config.auth.generated_password {
        if let Some((user, password)) = config.auth.users.first() {
            println!("generated credentials (set WS_USERNAME and WS_PASSWORD to choose your own): user {user:?}, password {:?}", password.expose());
        }
    } else if config.auth.allow_anonymous && config.auth.users.is_empty() && config.auth.jwt_secret.is_none() {
        println!("warning: --allow-anonymous: anyone who can reach this port can subscribe");
    }
    if config.admin.generated_token {
        println!("generated admin token (set ADMIN_TOKEN to choose your own): {}", config.admin.token.expose());
    }
    let http = if config.tls.is_some() { "https" } else { "http" };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(admin_addr) = admin_addr {
        println!("sluice admin API on {http}://{admin_addr}/api");
    }
    println!("console: {http}://{}/", browsable(admin_addr.unwrap_or(addr)));
    println!("sluice listening on {scheme}://{addr} (subscribe at /{{key}} or /*)");

    tokio::spawn(stop_on_signal(shutdown));
    gateway.serve(listener, admin).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// An address a browser on this machine can open: a wildcard listener is reached on loopback.
fn browsable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
