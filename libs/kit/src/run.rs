//! Start-up plumbing every service binary shares: logging to stderr, the stop signal, and a
//! runtime that runs a service until SIGTERM or SIGINT.

use std::future::Future;
use std::pin::Pin;

/// Logs to stderr, filtered by the environment variable `var` (`OPENEXEC_LOG`,
/// `CLAWLEDGER_LOG`; tracing `EnvFilter` syntax, default `info`). Colour codes only for a person
/// at a terminal, never in files or log collectors.
pub fn init_logging(var: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(var)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// What a service's `run` waits for: resolves once SIGTERM or SIGINT arrived.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Register SIGTERM and SIGINT now; the future resolves when either arrives (logging "shutdown
/// requested"). Must be called inside the runtime.
pub fn stop_signal() -> std::io::Result<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown requested");
    }))
}

/// Run `service` on a new multi-threaded runtime, giving it the [`stop_signal`], which is
/// registered before `service` starts: from the moment a service can tell anyone its address
/// (its "listening" line), a signal means a graceful stop, never an abrupt one. The error of
/// creating the runtime or registering the signals is `E`'s, like the service's own.
pub fn until_stopped<E, F, Fut>(service: F) -> Result<(), E>
where
    E: From<std::io::Error>,
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let stop = stop_signal()?;
        service(stop).await
    })
}
