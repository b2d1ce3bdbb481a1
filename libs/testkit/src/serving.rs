//! A service run in the test's own process (an embedder's setup): its `run(stop)` future on a
//! task, stopped on demand.

use std::future::Future;
use std::pin::Pin;

/// The future a service's `run` waits on: resolves when the test asks it to stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service serving on a task of the test's runtime.
pub struct Serving<E> {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> Serving<E> {
    /// Spawn `run(stop)`: `run` is the service's serve-until-stopped method (`Service::run`,
    /// `Ledger::run`), `addr` where it listens.
    pub fn spawn<F, Fut>(addr: std::net::SocketAddr, run: F) -> Serving<E>
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(run(Box::pin(async move {
            let _ = rx.await;
        })));
        Serving {
            base: format!("http://{addr}"),
            stop: Some(stop),
            done,
        }
    }

    /// Ask it to stop and wait for `run` to return; what it returned.
    pub async fn stop(mut self) -> Result<(), E> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.done).await.expect("the service task panicked")
    }
}

impl<E> Drop for Serving<E> {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.done.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_resolves_the_signal_and_returns_the_result() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let s = Serving::spawn(addr, |stop| async move {
            stop.await;
            Err::<(), String>("stopped".into())
        });
        assert_eq!(s.base, "http://127.0.0.1:9");
        assert_eq!(s.stop().await, Err("stopped".into()));
    }
}
