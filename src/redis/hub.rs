//! Notifications from other replicas, over one pub/sub connection per
//! replica.
//!
//! Pub/sub rather than a blocking list pop: a pop holds a connection for
//! every key waited on, and the leader would have to know how many replicas
//! wait to push that many wake-ups. One subscription per replica gets every
//! notification, and each replica wakes only its own waiters of that key.
//! A notification lost to a reconnection costs a waiter one poll period: the
//! answer itself waits in its key, never only in the message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, PoisonError, Weak},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::Notify;

/// The waiters of this replica, by the name of what they wait for, and the
/// caches that drop their local copies when another replica invalidates.
#[derive(Default)]
pub(crate) struct Hub {
    waiting: Mutex<HashMap<Box<str>, Waiting>>,
    listeners: Mutex<Vec<Weak<Listener>>>,
    started: OnceLock<()>,
}

/// Called with each invalidation message.
pub(crate) type Listener = dyn Fn(&[u8]) + Send + Sync;

/// The channels one replica listens on.
#[derive(Clone)]
pub(crate) struct Channels {
    pub(crate) flights: Vec<u8>,
    pub(crate) invalidations: Vec<u8>,
}

/// What wakes a name's waiters, and how many they are.
type Waiting = (Arc<Notify>, usize);

/// One waiter's interest in a name; dropping it ends the interest.
pub(crate) struct Interest {
    hub: Arc<Hub>,
    name: Box<str>,
    notify: Arc<Notify>,
}

impl Interest {
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Hub {
    /// Registers interest in `name`, starting the subscription on first use.
    pub(crate) fn interest(
        self: &Arc<Self>,
        name: &str,
        client: &redis::Client,
        channels: &Channels,
    ) -> Interest {
        self.start(client, channels);
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let (notify, count) = waiting
            .entry(name.into())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        *count += 1;
        Interest {
            hub: Arc::clone(self),
            name: name.into(),
            notify: Arc::clone(notify),
        }
    }

    /// Calls `listener` with every invalidation message, for as long as it
    /// lives.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn listen(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        client: &redis::Client,
        channels: &Channels,
    ) {
        self.start(client, channels);
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|listener| listener.strong_count() > 0);
        listeners.push(Arc::downgrade(listener));
    }

    fn start(self: &Arc<Self>, client: &redis::Client, channels: &Channels) {
        self.started.get_or_init(|| {
            let hub = Arc::downgrade(self);
            tokio::spawn(listen(hub, client.clone(), channels.clone()));
        });
    }

    fn invalidated(&self, message: &[u8]) {
        let listeners: Vec<_> = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for listener in listeners {
            listener(message);
        }
    }

    fn wake(&self, name: &str) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((notify, _)) = waiting.get(name) {
            notify.notify_waiters();
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut waiting = self
            .hub
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = waiting.get_mut(&*self.name) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&*self.name);
            }
        }
    }
}

/// Subscribes and wakes waiters until the hub is gone, reconnecting after
/// any failure.
async fn listen(hub: Weak<Hub>, client: redis::Client, channels: Channels) {
    let mut first = true;
    while hub.strong_count() > 0 {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            let subscribed = pubsub
                .subscribe(&[&channels.flights, &channels.invalidations])
                .await;
            if subscribed.is_ok() {
                // Subscribed again after a loss: invalidations published
                // meanwhile were missed, so the listeners drop everything
                // (an empty message). Waiters poll, and miss nothing.
                if !std::mem::take(&mut first) {
                    if let Some(hub) = hub.upgrade() {
                        hub.invalidated(&[]);
                    }
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Some(hub) = hub.upgrade() else {
                        return;
                    };
                    let payload = message.get_payload_bytes();
                    if message.get_channel_name().as_bytes() == channels.invalidations {
                        hub.invalidated(payload);
                    } else if let Ok(name) = std::str::from_utf8(payload) {
                        hub.wake(name);
                    }
                }
            }
        }
        tracing::debug!("redis subscription lost; subscribing again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
