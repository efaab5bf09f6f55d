//! Share mode across replicas: one leader in the cluster per key.
//!
//! Each replica coalesces its own requests first; its one local leader then
//! takes a *turn* here: it finds the cluster leader's answer, or becomes the
//! cluster leader (one `SET NX PX` with a fencing token), or waits for the
//! one that leads. The leader publishes its shareable answer under the
//! flight's key and fence, with a short expiry, then tells every replica
//! (pub/sub). A leader whose lease ends with no answer (it died) is replaced
//! by exactly one waiter: the script that finds the lease gone takes it in
//! the same step.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{response, HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::{hub::Interest, scripts, Redis};
use crate::{key::ShareKey, shared::SharedOutcome};

/// Share mode across replicas, for
/// [`SingleFlightLayer::cluster`](crate::SingleFlightLayer::cluster): one
/// handler run in the cluster for each key in flight.
///
/// Each replica coalesces its own requests first, so one request per key
/// and replica asks Redis. A shareable answer up to
/// [`max_shared_body`](Self::max_shared_body) (1 MiB by default) is
/// published for the other replicas' waiters; anything else (larger,
/// unshareable, or tied by `Vary` to the leader's request headers) tells
/// them to run their own at once. While Redis cannot be asked, each replica
/// coalesces on its own (local-only).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) redis: Redis,
    pub(crate) max_shared_body: usize,
    pub(crate) lease: Duration,
}

impl Cluster {
    /// Share mode across the replicas that use `redis`.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            max_shared_body: 1024 * 1024,
            lease: Duration::from_secs(10),
        }
    }

    /// The largest body sent to other replicas (default 1 MiB); larger
    /// answers are shared within the leader's replica only.
    #[must_use]
    pub fn max_shared_body(mut self, bytes: usize) -> Self {
        self.max_shared_body = bytes;
        self
    }

    /// How long the cluster leader's lease lasts without renewal (default
    /// 10 s). The leader renews it while it works, every third of it; a
    /// leader that dies stops renewing, and one waiter takes over this long
    /// after.
    #[must_use]
    pub fn leader_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// How long a published answer waits for the replicas that saw its flight.
const ANSWER_TTL_MS: u64 = 5_000;

/// How often a cluster waiter looks again without a notification.
const POLL: Duration = Duration::from_millis(250);

/// One local leader's place in the cluster's flight for its key.
pub(crate) struct Ticket {
    cluster: Cluster,
    /// The SHA-256 of the key, in hex: the only form of the key (which may
    /// hold a caller's credentials) that Redis sees.
    digest: Box<str>,
    lease_ms: u64,
}

/// What a turn came to.
pub(crate) enum Turn {
    /// The cluster leader's answer.
    Answer(Published),
    /// This replica leads: run the work and publish.
    Lead(ClusterLease),
    /// Run the work here without publishing: Redis cannot be asked (share
    /// mode's policy is local-only coalescing), or the leader's answer
    /// cannot be shared.
    Alone,
}

/// A shareable answer as it travels between replicas.
pub(crate) struct Published {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Cluster {
    /// The ticket of a key, or `None` when this key cannot be named the
    /// same way on every replica: a caller known by a typed extension.
    pub(crate) fn ticket<K: serde::Serialize>(&self, key: &ShareKey<K>) -> Option<Ticket> {
        let caller = match &key.caller {
            Some(caller) => Some(caller.stable_parts()?),
            None => None,
        };
        let mut digest = Sha256::new();
        let user_key = serde_json::to_vec(&key.key).ok()?;
        field(&mut digest, &user_key);
        field(&mut digest, key.method.as_str().as_bytes());
        field(&mut digest, &[key.scheme as u8]);
        field(
            &mut digest,
            key.host.as_ref().map_or(&[][..], |h| h.as_bytes()),
        );
        match caller {
            Some(parts) => {
                field(&mut digest, b"caller");
                for (tag, value) in parts {
                    field(&mut digest, &(tag as u64).to_le_bytes());
                    field(&mut digest, value);
                }
            }
            None => field(&mut digest, b"anyone"),
        }
        let digest = digest.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        Some(Ticket {
            cluster: self.clone(),
            digest: hex.into(),
            lease_ms: u64::try_from(self.lease.as_millis())
                .unwrap_or(u64::MAX)
                .clamp(3, 1 << 40),
        })
    }
}

/// Writes one length-prefixed field: no two keys write the same bytes.
fn field(digest: &mut Sha256, bytes: &[u8]) {
    digest.update((bytes.len() as u64).to_le_bytes());
    digest.update(bytes);
}

impl Ticket {
    fn redis(&self) -> &Redis {
        &self.cluster.redis
    }

    fn lease_name(&self) -> Vec<u8> {
        self.redis().prefix().share(&self.digest, "lease")
    }

    fn answer_prefix(&self) -> Vec<u8> {
        self.redis().prefix().share(&self.digest, "answer:")
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
            let step = self.step(&watched).await;
            let Ok(step) = step else {
                return Turn::Alone;
            };
            let text = |index: usize| {
                step.get(index)
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
                    .map(str::to_owned)
            };
            match text(0).as_deref() {
                Some("answer") => {
                    return match step.get(1).and_then(|answer| decode(answer)) {
                        Some(published) => Turn::Answer(published),
                        // The leader's answer could not be shared: each
                        // replica runs its own, at once.
                        None => Turn::Alone,
                    };
                }
                Some("lead") => {
                    let Some(fence) = text(1) else {
                        return Turn::Alone;
                    };
                    let renewing = renew(&self, fence.clone());
                    return Turn::Lead(ClusterLease {
                        ticket: Some(self),
                        fence,
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

    async fn step(&self, watched: &str) -> Result<Vec<Vec<u8>>, super::Failure> {
        let (lease, answers) = (self.lease_name(), self.answer_prefix());
        let fence = self.redis().prefix().fence();
        let nonce = random_token();
        let lease_ms = self.lease_ms;
        self.redis()
            .call("share turn", |mut connection| async move {
                scripts::SHARE_STEP
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
    /// Renews the lease while the work runs; aborted when it ends.
    renewing: tokio::task::JoinHandle<()>,
}

impl ClusterLease {
    /// Publishes what the flight came to, in the background: a shareable
    /// answer within the bound, or the news that each replica must run its
    /// own.
    pub(crate) fn publish(mut self, outcome: &SharedOutcome) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        self.renewing.abort();
        let answer = match outcome {
            SharedOutcome::Response(response) if !response.has_trailers() => encode(
                response.parts(),
                response.data(),
                ticket.cluster.max_shared_body,
            ),
            _ => None,
        };
        let fence = std::mem::take(&mut self.fence);
        // An empty answer tells waiters to run their own.
        tokio::spawn(end(ticket, fence, Some(answer.unwrap_or_default())));
    }
}

impl Drop for ClusterLease {
    fn drop(&mut self) {
        self.renewing.abort();
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let fence = std::mem::take(&mut self.fence);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // No answer: free the lease for a waiter to take over.
            runtime.spawn(end(ticket, fence, None));
        }
    }
}

/// Renews the lease every third of its length until aborted.
fn renew(ticket: &Ticket, fence: String) -> tokio::task::JoinHandle<()> {
    let (redis, lease, lease_ms) = (
        ticket.cluster.redis.clone(),
        ticket.lease_name(),
        ticket.lease_ms,
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
            let (lease, fence) = (&lease, &fence);
            let renewed = redis
                .call("share renew", |mut connection| async move {
                    scripts::SHARE_RENEW
                        .key(lease)
                        .arg(fence)
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
async fn end(ticket: Ticket, fence: String, answer: Option<Vec<u8>>) {
    let (lease, answers) = (ticket.lease_name(), ticket.answer_prefix());
    let channel = ticket.redis().prefix().share_channel();
    let digest = ticket.digest.clone();
    let _ = ticket
        .redis()
        .call("share publish", |mut connection| async move {
            let mut answer_name = answers;
            answer_name.extend_from_slice(fence.as_bytes());
            scripts::SHARE_END
                .key(&lease)
                .arg(&fence)
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

/// The answer's wire form: status, then each header as name and value, then
/// the body, every part length-prefixed. `None` past `max_body` or for an
/// answer a `Vary` ties to the leader's request headers (the waiters'
/// headers are on other replicas: they run their own).
fn encode(parts: &response::Parts, body: &Bytes, max_body: usize) -> Option<Vec<u8>> {
    if body.len() > max_body || parts.headers.contains_key(http::header::VARY) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(&parts.status.as_u16().to_le_bytes());
    out.extend_from_slice(&(parts.headers.len() as u32).to_le_bytes());
    for (name, value) in &parts.headers {
        for bytes in [name.as_str().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out.extend_from_slice(body);
    Some(out)
}

/// Reads an answer back; `None` for the empty "run your own" answer or
/// anything malformed.
fn decode(bytes: &[u8]) -> Option<Published> {
    let mut rest = bytes;
    let mut take = |len: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
        rest = tail;
        Some(head)
    };
    let status = StatusCode::from_u16(u16::from_le_bytes(take(2)?.try_into().ok()?)).ok()?;
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let name = HeaderName::from_bytes(take(len)?).ok()?;
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let value = HeaderValue::from_bytes(take(len)?).ok()?;
        headers.append(name, value);
    }
    Some(Published {
        status,
        headers,
        body: Bytes::copy_from_slice(rest),
    })
}

fn random_token() -> String {
    let mut bytes = [0_u8; 16];
    let _ = getrandom::fill(&mut bytes);
    format!("{:032x}", u128::from_le_bytes(bytes))
}

/// Names a key for the cluster, boxed so that share mode keeps one pointer
/// and needs `K: Serialize` only where the cluster is set.
pub(crate) type Tickets<K> = Arc<dyn Fn(&ShareKey<K>) -> Option<Ticket> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_travel_whole_and_malformed_ones_are_refused() {
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = StatusCode::CREATED;
        parts.headers.append("x-a", HeaderValue::from_static("1"));
        parts.headers.append("x-a", HeaderValue::from_static("2"));
        let body = Bytes::from_static(b"hello");
        let wire = encode(&parts, &body, 1024).unwrap();
        let back = decode(&wire).unwrap();
        assert_eq!(back.status, StatusCode::CREATED);
        assert_eq!(back.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(back.body, body);
        assert!(encode(&parts, &body, 4).is_none(), "over the bound");
        assert!(decode(&wire[..5]).is_none());
        assert!(decode(b"").is_none());
        parts
            .headers
            .insert(http::header::VARY, HeaderValue::from_static("accept"));
        assert!(encode(&parts, &body, 1024).is_none());
    }
}
