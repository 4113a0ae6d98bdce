//! Every connected client, by `replyId`. A client is in the registry exactly while its
//! session lives: the session inserts it, and removes it when dropped.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::client::Client;

/// A cheap-to-clone handle on the table of connected clients.
#[derive(Clone, Default)]
pub struct Registry {
    clients: Arc<RwLock<HashMap<Arc<str>, Arc<Client>>>>,
}

impl Registry {
    /// Adds a client, until [`Registry::remove`] (which the session's drop calls).
    pub fn insert(&self, client: Arc<Client>) {
        // The id's one allocation is shared by the client and this key.
        self.clients.write().insert(client.id.clone(), client);
    }

    pub fn remove(&self, id: &str) {
        self.clients.write().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.clients.read().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.clients.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every client, for listing and for shutdown.
    pub fn all(&self) -> Vec<Arc<Client>> {
        self.clients.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Subscription;

    #[test]
    fn a_client_is_found_by_id_until_removed() {
        let r = Registry::default();
        let (c, _rx) =
            Client::new(crate::client::tests::info("abc", Subscription::All), crate::client::tests::limits(1), 1024);
        r.insert(Arc::new(c));
        assert!(r.get("abc").is_some());
        r.remove("abc");
        assert!(r.get("abc").is_none());
        assert!(r.is_empty());
    }
}
