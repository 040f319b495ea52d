//! troupe: a self-hosted, Apify-compatible Actor platform in one binary. This crate holds the
//! command line and the server bootstrap, so tests and tools can reuse them.

pub mod admin;
pub mod cli;
pub mod memory;
pub mod remote;
pub mod retention;
pub mod server;
