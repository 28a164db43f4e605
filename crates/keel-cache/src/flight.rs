//! Single-flight loading: concurrent misses on one key run the loader once.
//!
//! The first caller to miss becomes the leader and runs the loader; everyone else waits on a
//! `watch` channel for its outcome. If the leader is cancelled (its future dropped), a guard
//! publishes that, and a waiter takes over as the new leader — nobody waits forever.

use keel_core::sync::lock;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::cache::{Cache, CacheValue, SetOptions};
use crate::error::{LoadError, validate_key};

/// How a loaded value is stored.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// TTL, content type and tags of the stored value.
    pub set: SetOptions,
    /// If set, a loader error is remembered this long: callers within it get
    /// [`LoadError::NegativeCached`] without running the loader. Unset: errors are not cached.
    pub negative_ttl: Option<Duration>,
}

#[derive(Clone)]
enum Outcome {
    Pending,
    Loaded(CacheValue),
    Failed(Arc<dyn Any + Send + Sync>),
    Abandoned,
}

/// In-flight loads by key, and remembered failures.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<Arc<str>, watch::Receiver<Outcome>>>,
    failures: Mutex<HashMap<Arc<str>, (std::time::Instant, String)>>,
}

/// Publishes `Abandoned` and unregisters the flight if the leader never finished.
struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: Arc<str>,
    tx: watch::Sender<Outcome>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        lock(&self.flights.running).remove(&self.key);
        if matches!(*self.tx.borrow(), Outcome::Pending) {
            self.tx.send_replace(Outcome::Abandoned);
        }
    }
}

enum Role {
    Leader(watch::Sender<Outcome>),
    Waiter(watch::Receiver<Outcome>),
}

impl Cache {
    /// Returns the cached value, or runs `loader` once for all concurrent callers of `key`,
    /// stores its value and returns it. Loader errors are not cached unless
    /// `options.negative_ttl` is set.
    ///
    /// ```
    /// # tokio_test_block(async {
    /// use keel_cache::{Cache, CacheConfig, LoadOptions};
    ///
    /// let cache = Cache::new(CacheConfig::default());
    /// let value = cache
    ///     .get_or_load("report:42", LoadOptions::default(), || async {
    ///         Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"expensive result"))
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(value.bytes, "expensive result");
    /// # });
    /// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        options: LoadOptions,
        loader: F,
    ) -> Result<CacheValue, LoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: std::fmt::Display + Send + Sync + 'static,
    {
        validate_key(key)?;
        let mut loader = Some(loader);
        loop {
            if let Some(value) = self.get(key) {
                return Ok(value);
            }
            if let Some(message) = self.remembered_failure(key) {
                return Err(LoadError::NegativeCached(message));
            }
            match self.join_flight(key) {
                Role::Waiter(mut rx) => {
                    let outcome = match rx.wait_for(|o| !matches!(o, Outcome::Pending)).await {
                        Ok(o) => o.clone(),
                        Err(_) => Outcome::Abandoned,
                    };
                    match outcome {
                        Outcome::Loaded(value) => return Ok(value),
                        Outcome::Failed(err) => match err.downcast::<E>() {
                            Ok(err) => return Err(LoadError::Loader(err)),
                            // A leader with another error type: load ourselves.
                            Err(_) => continue,
                        },
                        Outcome::Abandoned | Outcome::Pending => continue,
                    }
                }
                Role::Leader(tx) => {
                    let guard = LeaderGuard {
                        flights: &self.inner.flights,
                        key: Arc::from(key),
                        tx,
                    };
                    // A load that finished between our miss above and our joining the flight
                    // has already stored the value: use it instead of loading again.
                    if let Some(value) = self.peek(key) {
                        guard.tx.send_replace(Outcome::Loaded(value.clone()));
                        return Ok(value);
                    }
                    if let Some(message) = self.remembered_failure(key) {
                        return Err(LoadError::NegativeCached(message));
                    }
                    let Some(run) = loader.take() else {
                        // Our loader already ran in an earlier round; should not happen, but a
                        // waiter must never run twice.
                        continue;
                    };
                    return match run().await {
                        Ok(bytes) => {
                            self.set(key, bytes, options.set.clone())?;
                            let value = self.peek(key).ok_or_else(|| {
                                LoadError::Cache(crate::CacheError::InvalidKey(
                                    "evicted at once".into(),
                                ))
                            });
                            match value {
                                Ok(v) => {
                                    guard.tx.send_replace(Outcome::Loaded(v.clone()));
                                    Ok(v)
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => {
                            if let Some(ttl) = options.negative_ttl {
                                self.remember_failure(key, ttl, e.to_string());
                            }
                            let e = Arc::new(e);
                            guard.tx.send_replace(Outcome::Failed(e.clone()));
                            Err(LoadError::Loader(e))
                        }
                    };
                }
            }
        }
    }

    /// Reads without counting a hit or miss.
    fn peek(&self, key: &str) -> Option<CacheValue> {
        self.live_entry(key).map(|entry| self.value_of(entry))
    }

    fn join_flight(&self, key: &str) -> Role {
        let mut running = lock(&self.inner.flights.running);
        if let Some(rx) = running.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        running.insert(Arc::from(key), rx);
        Role::Leader(tx)
    }

    fn remembered_failure(&self, key: &str) -> Option<String> {
        let mut failures = lock(&self.inner.flights.failures);
        let (until, message) = failures.get(key)?;
        if *until > self.inner.clock.now() {
            return Some(message.clone());
        }
        failures.remove(key);
        None
    }

    fn remember_failure(&self, key: &str, ttl: Duration, message: String) {
        let mut failures = lock(&self.inner.flights.failures);
        let now = self.inner.clock.now();
        if failures.len() >= 10_000 {
            failures.retain(|_, (until, _)| *until > now);
        }
        failures.insert(Arc::from(key), (now + ttl, message));
    }
}
