//! Share mode across replicas: one handler run in the cluster per key.
//!
//! The flight itself is [`super::flight`]'s; this names a share key for it
//! and carries a response between replicas.

use std::time::Duration;

use bytes::Bytes;
use http::{response, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{
    flight::{ClusterLease, Name, Ticket},
    Redis,
};
use crate::{identity::CallerIdentity, key::ShareKey, shared::SharedOutcome};

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

    /// The ticket of a key, or `None` when this key cannot be named the
    /// same way on every replica: a caller known by a typed extension.
    pub(crate) fn ticket<K: serde::Serialize>(
        &self,
        key: &ShareKey<K>,
        identity: Option<&CallerIdentity>,
    ) -> Option<Ticket> {
        let caller = match (&key.caller, identity) {
            (Some(caller), Some(identity)) => Some(caller.stable_parts(identity)?),
            (Some(_), None) => return None,
            (None, _) => None,
        };
        let mut name = Name::new("share");
        name.field(&serde_json::to_vec(&key.key).ok()?)
            .field(key.method.as_str().as_bytes())
            .field(&[key.scheme as u8])
            .field(key.host.as_ref().map_or(&[][..], |host| host.as_bytes()));
        match caller {
            Some(parts) => {
                name.field(b"caller");
                for (source, value) in parts {
                    name.field(&source).field(value);
                }
            }
            None => {
                name.field(b"anyone");
            }
        }
        Some(name.ticket(&self.redis, self.lease))
    }
}

/// A shareable answer as it travels between replicas.
pub(crate) struct Published {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Published {
    /// Reads an answer a leader published; `None` for anything malformed.
    pub(crate) fn read(bytes: &[u8]) -> Option<Self> {
        decode(bytes)
    }
}

/// What a share-mode flight publishes for the other replicas.
pub(crate) enum Wire {
    /// The response, encoded.
    Answer(Vec<u8>),
    /// Each replica must run its own: larger than the bound, unshareable,
    /// trailers, a `Vary`.
    RunYourOwn,
    /// A failure (a `5xx`, an error, a broken body): nothing is published;
    /// as one replica's followers enter once more together, exactly one
    /// waiter in the cluster takes over.
    Failed,
}

impl Wire {
    pub(crate) fn of(outcome: &SharedOutcome, max_body: usize) -> Self {
        match outcome {
            SharedOutcome::Response(response) if response.parts().status.is_server_error() => {
                Self::Failed
            }
            SharedOutcome::Unshareable(why) if why.is_failure() => Self::Failed,
            SharedOutcome::Response(response) if !response.has_trailers() => {
                match encode(response.parts(), response.data(), max_body) {
                    Some(answer) => Self::Answer(answer),
                    None => Self::RunYourOwn,
                }
            }
            SharedOutcome::Response(_) | SharedOutcome::Unshareable(_) => Self::RunYourOwn,
        }
    }

    /// Ends the cluster lease with it.
    pub(crate) async fn publish(&self, lease: ClusterLease) {
        match self {
            Self::Answer(answer) => lease.publish(Some(answer.clone())).await,
            Self::RunYourOwn => lease.publish(None).await,
            Self::Failed => drop(lease),
        }
    }
}

/// Names a key for the cluster (with the bound on what it publishes),
/// boxed so that share mode needs `K: Serialize` only where the cluster is
/// set.
pub(crate) type Tickets<K> = std::sync::Arc<
    dyn Fn(&ShareKey<K>, Option<&CallerIdentity>) -> Option<(Ticket, usize)> + Send + Sync,
>;

/// Share mode's cluster: how it names keys, and the connection (for the
/// response cache's tier).
pub(crate) struct Clustered<K> {
    pub(crate) tickets: Tickets<K>,
    pub(crate) redis: Redis,
}

impl<K> Clone for Clustered<K> {
    fn clone(&self) -> Self {
        Self {
            tickets: std::sync::Arc::clone(&self.tickets),
            redis: self.redis.clone(),
        }
    }
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
