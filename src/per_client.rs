//! Open WebSockets per client address, for `max_connections_per_ip`: a connection is
//! counted from its admitted handshake until it ends, once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Default)]
struct Counts {
    per_client: HashMap<Arc<str>, usize>,
    /// Which client each counted connection is, so that its end releases it.
    of_connection: HashMap<u64, Arc<str>>,
}

pub struct PerClient {
    max: Option<usize>,
    counts: Mutex<Counts>,
}

impl PerClient {
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Count connection `id` for `client`, unless that client already has the maximum
    /// open (false). Without a maximum, or a client with no address, nothing is counted.
    pub fn admit(&self, id: u64, client: Option<String>) -> bool {
        let (Some(max), Some(client)) = (self.max, client) else {
            return true;
        };
        let mut counts = self.counts.lock();
        let client: Arc<str> = client.into();
        let open = counts.per_client.entry(client.clone()).or_insert(0);
        if *open >= max {
            return false;
        }
        *open += 1;
        counts.of_connection.insert(id, client);
        true
    }

    /// Connection `id` ended; a second call (or one for an uncounted id) does nothing.
    pub fn release(&self, id: u64) {
        if self.max.is_none() {
            return;
        }
        let mut counts = self.counts.lock();
        let Some(client) = counts.of_connection.remove(&id) else {
            return;
        };
        if let Some(open) = counts.per_client.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                counts.per_client.remove(&client);
            }
        }
    }

    #[cfg(test)]
    fn open(&self, client: &str) -> usize {
        self.counts
            .lock()
            .per_client
            .get(client)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_maximum_is_refused_until_one_ends() {
        let limit = PerClient::new(Some(2));
        assert!(limit.admit(1, Some("1.2.3.4".into())));
        assert!(limit.admit(2, Some("1.2.3.4".into())));
        assert!(!limit.admit(3, Some("1.2.3.4".into())));
        assert!(limit.admit(4, Some("5.6.7.8".into())));
        limit.release(1);
        limit.release(1);
        limit.release(3);
        assert_eq!(limit.open("1.2.3.4"), 1);
        assert!(limit.admit(5, Some("1.2.3.4".into())));
        for id in [2, 4, 5] {
            limit.release(id);
        }
        assert!(limit.counts.lock().per_client.is_empty());
        assert!(limit.counts.lock().of_connection.is_empty());
    }

    #[test]
    fn without_a_maximum_nothing_is_kept() {
        let limit = PerClient::new(None);
        assert!((0..10).all(|id| limit.admit(id, Some("1.2.3.4".into()))));
        assert!(limit.counts.lock().of_connection.is_empty());
    }
}
