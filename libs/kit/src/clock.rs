//! The time of day as services read it: through a [`Clock`] they are given, never the system
//! clock directly, so that what depends on the time (an approval's validity window, a
//! proposal's expiry) is tested by setting the clock ([`ManualClock`]), never by waiting.

use chrono::{DateTime, Utc};

/// Where the time of day comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock: what every service uses outside tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set or advanced (tests).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = Utc::now();
        let c = ManualClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(chrono::Duration::seconds(5));
        assert_eq!(c.now(), t0 + chrono::Duration::seconds(5));
        c.set(t0);
        assert_eq!(c.now(), t0);
        let s = SystemClock.now();
        assert!((s - Utc::now()).num_seconds().abs() < 5);
    }
}
