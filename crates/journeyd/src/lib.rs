//! journeyd: the node binary's parts, as a library so that end-to-end tests and tools can run
//! them in-process. `main.rs` is only the command line.

pub mod archive_cmd;
pub mod bench;
pub mod config;
pub mod replay;
pub mod serve;
