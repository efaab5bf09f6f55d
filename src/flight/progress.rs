//! What a lease holder reports of its work.

use serde_json::{json, Map, Value};

/// How far the holder of a key has got: steps done out of a total, a short
/// message, or both.
///
/// Duplicates see it in their `409` body, as
/// `"progress":{"done":10,"total":289,"message":"..."}` (absent fields left
/// out).
///
/// ```
/// use tower_singleflight::Progress;
///
/// let halfway = Progress::steps(5, 10).with_message("resizing images");
/// assert_eq!(halfway.done(), Some(5));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Progress {
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    done: Option<u64>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    total: Option<u64>,
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    message: Option<String>,
}

impl Progress {
    /// `done` steps out of `total`.
    pub fn steps(done: u64, total: u64) -> Self {
        Self {
            done: Some(done),
            total: Some(total),
            message: None,
        }
    }

    /// A message alone, for work that cannot count its steps.
    pub fn message(message: impl Into<String>) -> Self {
        Self::default().with_message(message)
    }

    /// Adds a message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Steps done, if counted.
    pub fn done(&self) -> Option<u64> {
        self.done
    }

    /// Steps in all, if known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The message, if any.
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The JSON object duplicates see, whatever the crate's features.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        if let Some(done) = self.done {
            object.insert("done".into(), json!(done));
        }
        if let Some(total) = self.total {
            object.insert("total".into(), json!(total));
        }
        if let Some(message) = &self.message {
            object.insert("message".into(), json!(message));
        }
        Value::Object(object)
    }
}
