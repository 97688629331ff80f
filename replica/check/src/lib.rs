//! dssmr-check: judges what a run recorded, offline.
//!
//! # Layout
//!
//! In dependency order (each module uses only those above it, and the engine's app types):
//!
//! - [`multicast`]: the atomic multicast properties over recorded delivery sequences (depends
//!   on nothing else here);
//! - [`history`]: Jepsen-style operation histories (the record format and recorder), then
//!   [`history::kv_model`] (the kv app's sequential model over the app's own `KvCommand` and
//!   `KvReply`, and the decoding of their history encoding), `history::wgl` (the search),
//!   [`history::linearizability`], [`history::bank`] and [`history::chirper_posts`] (the
//!   checkers).
//!
//! Nothing here talks to a cluster, and nothing here encodes app commands: the apps own their
//! JSON form (`dssmr_engine::app::kv::command_json`, ...).

#![warn(unreachable_pub)]

pub mod multicast;

pub mod history;
