//! Every connected client, by `replyId`. A client is in the registry exactly while its
//! session runs: the guard returned by [`Registry::insert`] removes it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::client::Client;

/// A cheap-to-clone handle on the table of connected clients.
#[derive(Clone, Default)]
pub struct Registry {
    clients: Arc<RwLock<HashMap<String, Arc<Client>>>>,
}

/// Removes its client from the registry when dropped.
pub struct RegistryGuard {
    registry: Registry,
    id: String,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        self.registry.clients.write().remove(&self.id);
    }
}

impl Registry {
    pub fn insert(&self, client: Arc<Client>) -> RegistryGuard {
        let id = client.id.clone();
        self.clients.write().insert(id.clone(), client);
        RegistryGuard { registry: self.clone(), id }
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
    fn a_client_leaves_when_its_guard_drops() {
        let r = Registry::default();
        let (c, _rx) =
            Client::new(crate::client::tests::info("abc", Subscription::All), crate::client::tests::limits(1), 1024);
        let guard = r.insert(Arc::new(c));
        assert!(r.get("abc").is_some());
        drop(guard);
        assert!(r.get("abc").is_none());
        assert!(r.is_empty());
    }
}
