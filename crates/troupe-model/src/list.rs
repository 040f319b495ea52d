//! The paginated list envelope shared by every collection listing.

use serde::Serialize;

/// Largest page of a collection listing.
pub const MAX_LIST_LIMIT: u64 = 1000;

/// Offset/limit/desc paging of a collection (already validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListParams {
    pub offset: u64,
    pub limit: u64,
    pub desc: bool,
}

impl Default for ListParams {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: MAX_LIST_LIMIT,
            desc: false,
        }
    }
}

/// One page of a collection: `{total, offset, limit, count, desc, items}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    pub count: u64,
    pub desc: bool,
    pub items: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(params: ListParams, total: u64, items: Vec<T>) -> Self {
        Self {
            total,
            offset: params.offset,
            limit: params.limit,
            count: items.len() as u64,
            desc: params.desc,
            items,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            total: self.total,
            offset: self.offset,
            limit: self.limit,
            count: self.count,
            desc: self.desc,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}
