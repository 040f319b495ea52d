//! Dataset items: validating pushes, the item query (`offset`, `fields`, `unwind`, ...), the
//! per-item transforms and every export format, streamed in constant memory.

pub mod export;
pub mod formats;
pub mod node;
pub mod push;
pub mod query;
pub mod table;
pub mod transform;

pub use export::items_response;
pub use push::parse_push_body;
pub use query::{ItemFormat, ItemsQuery};
