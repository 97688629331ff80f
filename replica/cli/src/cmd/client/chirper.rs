//! `dssmr client chirper ...`: the Chirper verbs, run through a proxy; the reply in the app's
//! JSON ([`dssmr_engine::app::chirper::json`]). This module parses and runs one command.

use clap::Subcommand;
use dssmr_engine::app::chirper::json::{created_json, reply_json};
use dssmr_engine::app::chirper::{user_var, Chirper, ChirperCommand, User, UserId};
use dssmr_engine::client::{Created, Proxy};
use serde_json::Value;

#[derive(Subcommand)]
pub enum ChirperOp {
    /// Create a user with no edges: {"created":bool} (false: it existed).
    CreateUser { user: UserId },
    /// USER posts TEXT to its followers' timelines: {"posted":{"seq":N}}.
    Post { user: UserId, text: String },
    /// FOLLOWER starts following FOLLOWEE: {"followed":bool}.
    Follow { follower: UserId, followee: UserId },
    /// FOLLOWER stops following FOLLOWEE: {"unfollowed":bool}.
    Unfollow { follower: UserId, followee: UserId },
    /// The timeline of USER, oldest first: {"timeline":[..]}.
    Timeline { user: UserId },
}

/// Runs `op` and returns the reply as JSON.
pub async fn run(p: Proxy<Chirper>, op: ChirperOp) -> anyhow::Result<Value> {
    let cmd = match op {
        ChirperOp::CreateUser { user } => {
            let created = p.create(user_var(user), &User::new(user)).await?;
            return Ok(created_json(created == Created::Created));
        }
        ChirperOp::Post { user, text } => ChirperCommand::Post {
            user,
            text,
            time: unix_micros(),
        },
        ChirperOp::Follow { follower, followee } => ChirperCommand::Follow { follower, followee },
        ChirperOp::Unfollow { follower, followee } => {
            ChirperCommand::Unfollow { follower, followee }
        }
        ChirperOp::Timeline { user } => ChirperCommand::GetTimeline { user },
    };
    Ok(reply_json(&p.access(&cmd).await?))
}

/// Wall-clock µs since the Unix epoch: the post time of a command-line post (timelines of
/// posts from different machines are ordered as well as their clocks agree).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
