//! One flight across replicas: a fenced lease in Redis, the answer its
//! leader publishes, and the waiters on every replica.
//!
//! A replica's one local leader for a key takes a *turn*: it finds the
//! cluster leader's answer, or becomes the cluster leader (one script: `SET
//! NX PX` with a fencing token), or waits for the one that leads. The leader
//! publishes its answer's bytes under the flight's name and fence, with a
//! short expiry, then tells every replica (pub/sub). Only waiters that saw
//! that fence take it: a request that comes after a flight never gets its
//! old answer. A leader whose lease ends with no answer (it died) is replaced
//! by exactly one waiter: the script that finds the lease gone takes it in
//! the same step. Share mode and `ValueCache` both fly this way.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{hub::Interest, scripts, Redis};

/// How long a published answer waits for the replicas that saw its flight.
const ANSWER_TTL_MS: u64 = 5_000;

/// How often a cluster waiter looks again without a notification.
const POLL: Duration = Duration::from_millis(250);

/// One local leader's place in the cluster's flight for its name.
pub(crate) struct Ticket {
    redis: Redis,
    /// A SHA-256 in hex: the only form of the key (which may hold a
    /// caller's credentials) that Redis sees.
    digest: Box<str>,
    lease_ms: u64,
}

/// What a turn came to.
pub(crate) enum Turn {
    /// The cluster leader's answer, as it published it.
    Answer(Vec<u8>),
    /// This replica leads: do the work, then publish.
    Lead(ClusterLease),
    /// Do the work here without publishing: Redis cannot be asked (the
    /// policy is then local-only coalescing), or the leader's answer could
    /// not be shared.
    Alone,
}

/// Builds a flight's name from length-prefixed fields.
pub(crate) struct Name(Sha256);

impl Name {
    /// A name in `domain` (`share`, `value:NAME`): names of two domains
    /// never meet.
    pub(crate) fn new(domain: &str) -> Self {
        let mut name = Self(Sha256::new());
        name.field(domain.as_bytes());
        name
    }

    /// Adds one field; no two sequences of fields write the same bytes.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// The ticket of the flight so named, led for at most `lease` without
    /// renewal.
    pub(crate) fn ticket(self, redis: &Redis, lease: Duration) -> Ticket {
        let mut hex = String::with_capacity(64);
        for byte in self.0.finalize() {
            hex.push_str(&format!("{byte:02x}"));
        }
        Ticket {
            redis: redis.clone(),
            digest: hex.into(),
            lease_ms: u64::try_from(lease.as_millis())
                .unwrap_or(u64::MAX)
                .clamp(3, 1 << 40),
        }
    }
}

impl Ticket {
    /// The flight's name, a SHA-256 in hex.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }

    fn redis(&self) -> &Redis {
        &self.redis
    }

    fn lease_name(&self) -> Vec<u8> {
        self.redis().prefix().flight(&self.digest, "lease")
    }

    fn answer_prefix(&self) -> Vec<u8> {
        self.redis().prefix().flight(&self.digest, "answer:")
    }

    /// Finds the cluster's answer, or leads, or waits for whoever leads; at
    /// most until the caller stops polling (its own wait and lease bound it).
    pub(crate) async fn turn(self) -> Turn {
        let interest: Interest = self.redis().interest(&self.digest);
        let mut watched = String::new();
        loop {
            let notified = interest.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let nonce = random_token();
            let stepped = self.step(&watched, &nonce).await;
            let Ok(step) = stepped else {
                // The step may still run once Redis answers and take the
                // lease for nobody: undo it then, by its own nonce.
                abandon_later(&self, nonce);
                return Turn::Alone;
            };
            let text = |index: usize| {
                step.get(index)
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
                    .map(str::to_owned)
            };
            match text(0).as_deref() {
                Some("answer") => {
                    return match step.into_iter().nth(1) {
                        Some(answer) if !answer.is_empty() => Turn::Answer(answer),
                        // The leader's answer could not be shared: each
                        // replica runs its own, at once.
                        _ => Turn::Alone,
                    };
                }
                Some("lead") => {
                    let Some(fence) = text(1) else {
                        return Turn::Alone;
                    };
                    // The lease is held as `fence:nonce`: compared whole, so
                    // a fence counter that starts again (Redis lost it)
                    // never lets an old leader end a new one's lease.
                    let holding = format!("{fence}:{nonce}");
                    let renewing = renew(&self, holding.clone());
                    return Turn::Lead(ClusterLease {
                        ticket: Some(self),
                        fence,
                        holding,
                        renewing,
                    });
                }
                Some("wait") => {
                    watched = text(1).unwrap_or_default();
                    let left = text(2)
                        .and_then(|ms| ms.parse::<u64>().ok())
                        .map_or(POLL, Duration::from_millis);
                    let _ = tokio::time::timeout(left.min(POLL), notified).await;
                }
                _ => return Turn::Alone,
            }
        }
    }

    async fn step(&self, watched: &str, nonce: &str) -> Result<Vec<Vec<u8>>, super::Failure> {
        let (lease, answers) = (self.lease_name(), self.answer_prefix());
        let fence = self.redis().prefix().fence();
        let lease_ms = self.lease_ms;
        self.redis()
            .call("flight turn", |mut connection| async move {
                scripts::FLIGHT_STEP
                    .key(&lease)
                    .key(&fence)
                    .arg(watched)
                    .arg(nonce)
                    .arg(lease_ms)
                    .arg(&answers)
                    .invoke_async::<Vec<Vec<u8>>>(&mut connection)
                    .await
            })
            .await
    }
}

/// The cluster lease of the replica that leads. Publishing the answer ends
/// it; dropped unpublished (the work failed, panicked or was aborted), it
/// is given up at once, so that exactly one waiter takes over.
pub(crate) struct ClusterLease {
    ticket: Option<Ticket>,
    fence: String,
    /// The lease's value, `fence:nonce`.
    holding: String,
    /// Renews the lease while the work runs; aborted when it ends.
    renewing: tokio::task::JoinHandle<()>,
}

impl ClusterLease {
    /// Publishes what the flight came to: the answer's bytes, or (`None`)
    /// the news that each replica must run its own. Awaited before the
    /// leader answers its own callers, so that a request that comes after
    /// that answer never waits on this flight and takes its answer.
    pub(crate) async fn publish(mut self, answer: Option<Vec<u8>>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        self.renewing.abort();
        let (fence, holding) = (
            std::mem::take(&mut self.fence),
            std::mem::take(&mut self.holding),
        );
        // An empty answer tells waiters to run their own.
        end(ticket, fence, holding, Some(answer.unwrap_or_default())).await;
    }
}

impl Drop for ClusterLease {
    fn drop(&mut self) {
        self.renewing.abort();
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let (fence, holding) = (
            std::mem::take(&mut self.fence),
            std::mem::take(&mut self.holding),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // No answer: free the lease for a waiter to take over.
            runtime.spawn(end(ticket, fence, holding, None));
        }
    }
}

/// Renews the lease every third of its length until aborted.
fn renew(ticket: &Ticket, holding: String) -> tokio::task::JoinHandle<()> {
    let (redis, lease, lease_ms) = (ticket.redis.clone(), ticket.lease_name(), ticket.lease_ms);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
            let (lease, holding) = (&lease, &holding);
            let renewed = redis
                .call("flight renew", |mut connection| async move {
                    scripts::FLIGHT_RENEW
                        .key(lease)
                        .arg(holding)
                        .arg(lease_ms)
                        .invoke_async::<bool>(&mut connection)
                        .await
                })
                .await;
            if renewed == Ok(false) {
                return;
            }
        }
    })
}

/// Ends a cluster lease: with `answer` published under its fence (`None`:
/// no answer, a waiter takes over), then every replica told.
async fn end(ticket: Ticket, fence: String, holding: String, answer: Option<Vec<u8>>) {
    let (lease, answers) = (ticket.lease_name(), ticket.answer_prefix());
    let channel = ticket.redis().prefix().flight_channel();
    let digest = ticket.digest.clone();
    let _ = ticket
        .redis()
        .call("flight publish", |mut connection| async move {
            let mut answer_name = answers;
            answer_name.extend_from_slice(fence.as_bytes());
            scripts::FLIGHT_END
                .key(&lease)
                .arg(&holding)
                .arg(answer.is_some() as u8)
                .arg(answer.unwrap_or_default())
                .arg(ANSWER_TTL_MS)
                .arg(answer_name)
                .arg(channel)
                .arg(&*digest)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await;
}

/// Gives up, once Redis answers (every half second, for up to a minute),
/// the lease a timed-out step may have taken with `nonce`.
fn abandon_later(ticket: &Ticket, nonce: String) {
    let lease = ticket.lease_name();
    let (channel, digest) = (
        ticket.redis.prefix().flight_channel(),
        ticket.digest.clone(),
    );
    ticket
        .redis
        .until_answered("flight abandon", move |mut connection| {
            let (lease, nonce) = (lease.clone(), nonce.clone());
            let (channel, digest) = (channel.clone(), digest.clone());
            async move {
                scripts::FLIGHT_ABANDON
                    .key(lease)
                    .arg(nonce)
                    .arg(channel)
                    .arg(&*digest)
                    .invoke_async::<i64>(&mut connection)
                    .await
            }
        });
}

fn random_token() -> String {
    let mut bytes = [0_u8; 16];
    let _ = getrandom::fill(&mut bytes);
    format!("{:032x}", u128::from_le_bytes(bytes))
}
