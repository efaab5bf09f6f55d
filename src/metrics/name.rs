//! The name a layer, table or cache is known by in metrics and traces.

use std::sync::{Arc, PoisonError, RwLock};

/// A name shared by a table and its clones, set while building them.
#[derive(Debug)]
pub(crate) struct Name(RwLock<Arc<str>>);

impl Default for Name {
    fn default() -> Self {
        Self(RwLock::new(Arc::from(super::DEFAULT_NAME)))
    }
}

impl Name {
    pub(crate) fn get(&self) -> Arc<str> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set(&self, name: Arc<str>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = name;
    }
}
