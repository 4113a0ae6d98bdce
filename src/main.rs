//! `sluice`: start-up as a sequence. Load the settings, fetch the broker's from the Quix
//! portal when a Quix SDK token stands for them (exit 69 when that fails), validate them
//! (every problem at once, exit 64), connect the source (exit 69 when the broker or topic
//! is unusable), bind, serve, wait for SIGTERM/SIGINT, drain within the deadline, exit 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use sluice::config::{Command, Config, LogFormat, Options, TokenArgs, SETTING};
use sluice::gateway::Gateway;
use tokio_util::sync::CancellationToken;

/// sysexits.h: the settings are wrong.
const EXIT_CONFIG: u8 = 64;
/// sysexits.h: a service Sluice depends on is unavailable.
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let mut options = match Options::load() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match &options.command {
        Some(Command::Token(args)) => return print_token(&options, args),
        Some(Command::Healthcheck) => return healthcheck(&options),
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before validation: on Quix Cloud the broker address and the topics' real names are
    // known only once the portal has answered. Held until exit: it owns the CA file.
    let discovered = match runtime.block_on(sluice::config::quix::discover(&mut options)) {
        Ok(d) => d,
        Err(e) if e.is_config() => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let config = match Config::from_options(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.log_format);
    if let Some(d) = &discovered {
        let topics: Vec<String> = d.topics.iter().map(|(name, id)| format!("{name} → {id}")).collect();
        tracing::info!(
            workspace = %d.workspace,
            brokers = %d.brokers,
            topics = %topics.join(", "),
            ca_file = ?d.ca_file.as_ref().map(|c| c.path()),
            "broker settings fetched from the Quix portal"
        );
    }
    let code = runtime.block_on(run(config));
    drop(discovered);
    code
}

/// `sluice healthcheck`: GET /healthz of the gateway on this machine; exit 0 on 200, else 1
/// (what a container HEALTHCHECK expects).
fn healthcheck(options: &Options) -> ExitCode {
    // The gateway listens on every address by default: ask it on loopback.
    let host = match options.host {
        Some(ip) if !ip.is_unspecified() => ip,
        Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let addr = SocketAddr::new(host, options.port());
    let scheme = if options.tls_cert.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/healthz");
    let answer =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string()).and_then(
            |runtime| {
                runtime.block_on(async {
                    // The certificate is issued for the public name, not for loopback: this
                    // asks whether the process answers, not who it is.
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .danger_accept_invalid_certs(true)
                        .build()
                        .map_err(|e| e.to_string())?;
                    client.get(&url).send().await.map(|r| r.status()).map_err(|e| {
                        // The cause (connection refused, time-out) is in the chain.
                        let e = e.without_url();
                        let mut text = e.to_string();
                        let mut cause = std::error::Error::source(&e);
                        while let Some(c) = cause {
                            text = format!("{text}: {c}");
                            cause = c.source();
                        }
                        text
                    })
                })
            },
        );
    match answer {
        Ok(status) if status == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `sluice token`: a client token signed with the configured secret, on stdout.
fn print_token(options: &Options, args: &TokenArgs) -> ExitCode {
    let Some(secret) = options.jwt_secret.as_ref().filter(|s| !s.expose().is_empty()) else {
        eprintln!(
            "config error: {}: required to sign a token (the gateway must have the same one)",
            SETTING.jwt_secret
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    if secret.expose().len() < 32 {
        eprintln!("config error: {}: must be at least 32 bytes long", SETTING.jwt_secret);
        return ExitCode::from(EXIT_CONFIG);
    }
    let grant = sluice::auth::Grant { keys: args.keys.clone(), topics: args.topics.clone() };
    println!("{}", sluice::auth::mint(secret, &args.sub, &grant, args.ttl));
    ExitCode::SUCCESS
}

async fn run(config: Config) -> ExitCode {
    let shutdown = CancellationToken::new();
    let signals = Signals::register();
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
            eprintln!("error: {}: cannot listen on {}: {e}", SETTING.port, config.listen);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let admin = match config.admin.addr {
        None => None,
        Some(addr) => match sluice::server::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: {}: cannot listen on {addr}: {e}", SETTING.admin_addr);
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
            println!(
                "generated credentials (set {} and {} to choose your own): user {user:?}, password {:?}",
                SETTING.ws_username.env,
                SETTING.ws_password.env,
                password.expose()
            );
        }
    } else if config.auth.allow_anonymous && config.auth.users.is_empty() && config.auth.jwt_secret.is_none() {
        println!("warning: {}: anyone who can reach this port can subscribe", SETTING.allow_anonymous.flag());
    }
    if config.admin.generated_token {
        println!(
            "generated admin token (set {} to choose your own): {}",
            SETTING.admin_token.env,
            config.admin.token.expose()
        );
    }
    let http = if config.tls.is_some() { "https" } else { "http" };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(admin_addr) = admin_addr {
        println!("sluice admin API on {http}://{}/api", browsable(admin_addr));
    }
    println!("console: {http}://{}/", browsable(admin_addr.unwrap_or(addr)));
    // The URL first, as something to paste (the test harness reads it too): on a wildcard
    // address that is loopback, and the machine's name says how others reach it.
    let url = format!("{scheme}://{}", browsable(addr));
    let elsewhere = match hostname() {
        Some(host) if addr.ip().is_unspecified() => {
            format!("; on every interface: from other machines {scheme}://{host}:{}", addr.port())
        }
        _ => String::new(),
    };
    println!("sluice listening on {url} (subscribe at {url}/{{key}} or /*{elsewhere})");
    let cluster = config.cluster.as_ref().map_or_else(|| "off".to_owned(), |c| c.display());
    tracing::info!(node = %config.node_id, %cluster, %addr, "started");

    tokio::spawn(stop_on_signal(signals, gateway.tls().cloned(), gateway.metrics().clone(), shutdown));
    gateway.serve(listener, admin).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// An address a browser on this machine can open: a wildcard listener is reached on loopback.
fn browsable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// This machine's name, as other machines may know it (Linux; elsewhere none is printed).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "localhost").then(|| name.to_owned())
}

/// The signals Sluice acts on, registered before the start-up lines are printed: until a
/// handler is registered a signal has its default action, and SIGTERM or SIGHUP would stop
/// the process without a drain.
struct Signals {
    #[cfg(unix)]
    terminate: std::io::Result<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: std::io::Result<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: std::io::Result<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                terminate: signal(SignalKind::terminate()),
                interrupt: signal(SignalKind::interrupt()),
                hangup: signal(SignalKind::hangup()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

/// Waits for a signal to stop on; wherever one could not be registered, waits for the other.
#[cfg(unix)]
async fn next(signal: &mut std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match signal {
        Ok(s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for {name}");
            std::future::pending::<()>().await
        }
    }
}

async fn stop_on_signal(
    #[cfg_attr(not(unix), allow(unused_mut))] mut signals: Signals,
    tls: Option<sluice::server::Tls>,
    metrics: sluice::metrics::Metrics,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        // SIGHUP re-reads the TLS certificate and key (a renewed certificate is served to
        // new connections without a restart). It never stops the process: the default
        // action of an unhandled SIGHUP would kill it with no drain.
        let mut hangup = signals.hangup;
        tokio::spawn(async move {
            loop {
                next(&mut hangup, "SIGHUP").await;
                reload(tls.as_ref(), &metrics);
            }
        });
        tokio::select! {
            _ = next(&mut signals.interrupt, "SIGINT") => tracing::info!("SIGINT: shutting down"),
            _ = next(&mut signals.terminate, "SIGTERM") => tracing::info!("SIGTERM: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (signals, tls, metrics);
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
    shutdown.cancel();
}

#[cfg(unix)]
fn reload(tls: Option<&sluice::server::Tls>, metrics: &sluice::metrics::Metrics) {
    match tls {
        None => tracing::info!("SIGHUP: no TLS files to reload; nothing else is reloaded"),
        Some(tls) => match tls.reload() {
            Ok(()) => {
                metrics.tls_reloaded(true);
                tracing::info!("SIGHUP: TLS certificate and key reloaded");
            }
            Err(e) => {
                metrics.tls_reloaded(false);
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; still serving the previous certificate");
            }
        },
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or a log pipeline.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
