//! Riding out a database that is briefly gone (a PostgreSQL restart, a lost
//! connection): a store call that fails because the database is unavailable
//! ([`Error::Unavailable`]) is tried again with backoff, for at most the
//! session's lease; after that the scheduler gives up cleanly with a fault
//! of the machine. Other errors, and every error of a SQLite file (its faults,
//! such as a full disk, do not pass by themselves), return at once.
//!
//! Safe because every write the scheduler makes can be repeated: epoch rows
//! are upserted, state changes are guarded by the state and the session (a
//! repeat of one whose first try committed is recognized), and a claim whose
//! answer was lost is given back by the next heartbeat.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::{Backend, Store};

/// How long store calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Retry for this long at most: half the session's lease (no heartbeat
    /// beats while a call is retried, and past the lease other workers take
    /// this session's trials anyway).
    pub within: Duration,
    /// Whether to retry at all (PostgreSQL; a SQLite file does not come back
    /// by itself).
    pub retry: bool,
}

impl Patience {
    pub fn for_store(store: &Store, lease_seconds: f64) -> Patience {
        Patience {
            within: Duration::from_secs_f64((lease_seconds / 2.0).max(1.0)),
            retry: store.backend() == Backend::Postgres,
        }
    }

    /// Calls `f` until it succeeds, fails otherwise than by the database
    /// being unavailable, or `within` has passed.
    pub async fn call<T, Fut>(&self, mut f: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = self.begin();
        loop {
            match f().await {
                Err(e) => match tries.again(e).await {
                    Some(e) => return Err(e),
                    None => continue,
                },
                ok => return ok,
            }
        }
    }

    /// The retries of one call, for loops that cannot hand over a closure
    /// (see the [`db!`](crate::db) macro).
    pub fn begin(&self) -> Tries {
        Tries {
            patience: *self,
            start: Instant::now(),
            wait: Duration::from_millis(200),
        }
    }
}

/// The state of one call's retries.
pub struct Tries {
    patience: Patience,
    start: Instant,
    wait: Duration,
}

impl Tries {
    /// After a failed try: `None` when it is worth another (having waited),
    /// else the error to return (an unavailable database past the lease
    /// becomes a fault of the machine).
    pub async fn again(&mut self, e: Error) -> Option<Error> {
        match e {
            Error::Unavailable(m) if self.patience.retry => {
                if self.start.elapsed() + self.wait > self.patience.within {
                    return Some(Error::Fault(format!(
                        "results database (unavailable for longer than half the lease, {:.0} s): {m}",
                        self.patience.within.as_secs_f64()
                    )));
                }
                tokio::time::sleep(self.wait).await;
                self.wait = (self.wait * 2).min(Duration::from_secs(5));
                None
            }
            other => Some(other),
        }
    }
}

/// `db!(patience, store.call(...).await)`: the call, retried while the
/// database is briefly unavailable (see [`Patience`]).
#[macro_export]
macro_rules! db {
    ($patience:expr, $call:expr) => {{
        let mut tries = $patience.begin();
        loop {
            match $call {
                Err(e) => match tries.again(e).await {
                    Some(e) => break Err(e),
                    None => continue,
                },
                ok => break ok,
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unavailable_is_retried_within_the_lease_and_then_a_fault() {
        let p = Patience {
            within: Duration::from_secs(3),
            retry: true,
        };
        let mut tries = 0;
        let r: Result<i32> = p
            .call(|| {
                tries += 1;
                let t = tries;
                async move {
                    if t < 3 {
                        Err(Error::Unavailable("connection refused".into()))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(tries, 3);
        // other errors are not retried
        let mut tries = 0;
        let r: Result<i32> = p
            .call(|| {
                tries += 1;
                async { Err(Error::Store("syntax error".into())) }
            })
            .await;
        assert!(matches!(r, Err(Error::Store(_))) && tries == 1);
        // past the lease: a fault naming it
        let p = Patience {
            within: Duration::from_millis(500),
            retry: true,
        };
        let t = Instant::now();
        let r: Result<i32> = p
            .call(|| async { Err(Error::Unavailable("server closed the connection".into())) })
            .await;
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Fault(_)), "{e}");
        assert!(e.to_string().contains("longer than half the lease"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        // SQLite: never retried
        let p = Patience {
            within: Duration::from_secs(60),
            retry: false,
        };
        let r: Result<i32> = p
            .call(|| async { Err(Error::Unavailable("gone".into())) })
            .await;
        assert!(matches!(r, Err(Error::Unavailable(_))));
    }
}
