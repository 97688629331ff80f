//! The JSON form of Chirper commands and replies: the `f`, `args` and `result` of a recorded
//! history (see `dssmr_check::history`) and what `dssmr client chirper ...` prints.
//!
//! | `f`            | `args`                               | `result`                          |
//! |----------------|--------------------------------------|-----------------------------------|
//! | `create_user`  | `{"user":1,"following":[2],"followers":[3]}` | `{"created":bool}`        |
//! | `post`         | `{"user":1,"text":"..","time":7}`    | `{"posted":{"seq":0}}`            |
//! | `follow`       | `{"follower":1,"followee":2}`        | `{"followed":bool}`               |
//! | `unfollow`     | `{"follower":1,"followee":2}`        | `{"unfollowed":bool}`             |
//! | `get_timeline` | `{"user":1}`                         | `{"timeline":[{"time","author","seq","text"}..]}` |
//!
//! and any command may return `{"missing":[user ids]}`.
//!
//! This module owns the encoding only; it does not decode, record or execute anything (the
//! checkers of `dssmr_check::history::chirper_posts` and `chirper_timelines` read it).

use super::{ChirperCommand, ChirperReply, User};
use serde_json::{json, Value};

/// The history name and arguments of a Chirper command.
pub fn command_json(cmd: &ChirperCommand) -> (&'static str, Value) {
    match cmd {
        ChirperCommand::Post { user, text, time } => {
            ("post", json!({ "user": user, "text": text, "time": time }))
        }
        ChirperCommand::Follow { follower, followee } => (
            "follow",
            json!({ "follower": follower, "followee": followee }),
        ),
        ChirperCommand::Unfollow { follower, followee } => (
            "unfollow",
            json!({ "follower": follower, "followee": followee }),
        ),
        ChirperCommand::GetTimeline { user } => ("get_timeline", json!({ "user": user })),
    }
}

/// The history name and arguments of the create of `user` (with its initial edges).
pub fn create_json(user: &User) -> (&'static str, Value) {
    (
        "create_user",
        json!({ "user": user.id, "following": user.following, "followers": user.followers }),
    )
}

/// The result of a create: `created` is false when the user existed already.
pub fn created_json(created: bool) -> Value {
    json!({ "created": created })
}

/// A Chirper reply as JSON.
pub fn reply_json(reply: &ChirperReply) -> Value {
    match reply {
        ChirperReply::Posted { seq } => json!({ "posted": { "seq": seq } }),
        ChirperReply::Followed(added) => json!({ "followed": added }),
        ChirperReply::Unfollowed(removed) => json!({ "unfollowed": removed }),
        ChirperReply::Timeline(posts) => json!({ "timeline": posts }),
        ChirperReply::Missing(users) => json!({ "missing": users }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::chirper::Post;

    #[test]
    fn json_encodings() {
        let (f, args) = command_json(&ChirperCommand::Post {
            user: 1,
            text: "hi".into(),
            time: 7,
        });
        assert_eq!(f, "post");
        assert_eq!(args, json!({"user": 1, "text": "hi", "time": 7}));
        assert_eq!(
            command_json(&ChirperCommand::Unfollow {
                follower: 1,
                followee: 2
            }),
            ("unfollow", json!({"follower": 1, "followee": 2}))
        );
        assert_eq!(
            reply_json(&ChirperReply::Posted { seq: 3 }),
            json!({"posted": {"seq": 3}})
        );
        assert_eq!(
            reply_json(&ChirperReply::Missing(vec![4, 9])),
            json!({"missing": [4, 9]})
        );
        let post = Post {
            time: 5,
            author: 1,
            seq: 0,
            text: "x".into(),
        };
        assert_eq!(
            reply_json(&ChirperReply::Timeline(vec![post])),
            json!({"timeline": [{"time": 5, "author": 1, "seq": 0, "text": "x"}]})
        );
        assert_eq!(created_json(true), json!({"created": true}));
    }
}
