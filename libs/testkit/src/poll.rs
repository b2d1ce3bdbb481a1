//! Waiting for something to become true, with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] asks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Ask `probe` every [`POLL`] until it gives `Some`, and return that; panic naming `what` if it
/// has not within `within`. `probe` runs at least once, even with a zero deadline.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not so within {within:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for code outside an async runtime.
pub fn eventually_blocking<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not so within {within:?}");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_some() {
        let n = AtomicU32::new(0);
        let got = eventually(Duration::from_secs(5), "three probes", || async {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            (k == 3).then_some(k)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: not so within")]
    async fn a_miss_names_what_was_awaited() {
        eventually(Duration::from_millis(50), "never", || async { None::<()> }).await;
    }

    #[test]
    fn blocking_too() {
        let mut k = 0;
        assert_eq!(
            eventually_blocking(Duration::from_secs(5), "two", || {
                k += 1;
                (k == 2).then_some(k)
            }),
            2
        );
        let r = std::panic::catch_unwind(|| {
            eventually_blocking(Duration::ZERO, "zero deadline", || None::<()>)
        });
        assert!(r.is_err());
    }
}
