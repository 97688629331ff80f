//! Every `getTimeline` reply of a Chirper history is one a correct Chirper could have given
//! at that moment, not only the final timelines ([`super::chirper_posts`] checks those).
//!
//! For each `ok` `get_timeline` of user `u` that returned a timeline:
//! 1. it is sorted (by time, author, sequence number), holds no post twice and at most
//!    [`TIMELINE_CAP`] posts;
//! 2. it holds none of `u`'s own posts (Chirper keeps them out of `u`'s timeline);
//! 3. every post in it is real: when its author was created by the history (so all its posts
//!    are in it), a `post` by that author with the same time and text was invoked, and did not
//!    `fail`; over all replies, no two posts of an author carry the same sequence number and no
//!    post carries two (posts are told apart by author, time and text, which loads keep
//!    unique);
//! 4. when `u` was created by the history, every author in it is someone `u` followed at its
//!    creation or tried to follow later;
//! 5. nothing acknowledged is missing: a post acknowledged (`ok`) before the read was invoked,
//!    by an author `u` follows for the whole history (a stable pair, as in
//!    [`super::chirper_posts`]), is in the reply unless enough other posts that sort after it
//!    may have pushed it out.
//!
//! 6. and no reply to any command says a user is `missing` when that user's create was
//!    acknowledged before the command was invoked (Chirper never deletes users).
//!
//! A duplicated post (a post executed twice, or merged twice into a timeline) breaks 1 or 3;
//! a post lost or delivered late breaks 5; a command run where its user is not breaks 6. This module only inspects; it does no I/O.

use super::chirper_posts::{Graph, PostCheckError};
use super::{Event, EventKind};
use dssmr_engine::app::chirper::{Post, UserId, TIMELINE_CAP};
use std::collections::{BTreeSet, HashMap};

/// What the check covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineReport {
    /// Timeline replies checked.
    pub replies: usize,
    /// Posts in them.
    pub posts: usize,
    /// (acknowledged post, reply) pairs that rule 5 required, and found.
    pub required: usize,
}

/// A reply no correct Chirper could have given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event #{index}: {f} of user {user}: {what}")]
pub struct BadTimeline {
    /// Position of the reply in the history.
    pub index: usize,
    /// The command (`get_timeline` for rules 1 to 5).
    pub f: String,
    /// The reader (rules 1 to 5), or the user said to be missing (rule 6).
    pub user: UserId,
    /// Which rule it breaks, and how.
    pub what: String,
}

/// Why the check could not judge, or what it found.
#[derive(Debug, thiserror::Error)]
pub enum TimelineCheckError {
    /// The history is not what Chirper records.
    #[error(transparent)]
    Malformed(#[from] PostCheckError),
    /// Replies no correct Chirper could have given (the first of them shown).
    #[error("{} bad timeline replies, e.g. {}", .0.len(), .0[0])]
    Bad(Vec<BadTimeline>),
}

/// The posts of the history: by (author, time, text), whether one was invoked and not
/// failed; and the acknowledged ones with the index of their `ok`.
struct Posts {
    invoked: BTreeSet<(UserId, u64, String)>,
    acknowledged: Vec<(usize, Post)>,
}

impl Posts {
    fn of(events: &[Event]) -> Result<Posts, PostCheckError> {
        let mut invoked = BTreeSet::new();
        let mut failed: HashMap<(UserId, u64, String), usize> = HashMap::new();
        let mut acknowledged = Vec::new();
        for (index, e) in events.iter().enumerate() {
            if e.f != "post" {
                continue;
            }
            let user = super::chirper_posts::arg_u64(e, index, "user")?;
            let time = super::chirper_posts::arg_u64(e, index, "time")?;
            let text = e.args["text"].as_str().unwrap_or_default().to_string();
            match e.kind {
                EventKind::Invoke => {
                    invoked.insert((user, time, text));
                }
                EventKind::Fail => *failed.entry((user, time, text)).or_default() += 1,
                // Answered `missing`: not acknowledged (rule 6 judges the answer).
                EventKind::Ok if missing_users(e).is_some() => {}
                EventKind::Ok => {
                    let seq = e
                        .result
                        .as_ref()
                        .and_then(|r| r["posted"]["seq"].as_u64())
                        .ok_or_else(|| PostCheckError::Malformed {
                            index,
                            f: e.f.clone(),
                            what: "no `posted.seq`".into(),
                        })?;
                    acknowledged.push((
                        index,
                        Post {
                            time,
                            author: user,
                            seq,
                            text,
                        },
                    ));
                }
                EventKind::Info => {}
            }
        }
        // A post whose every invocation failed took no effect.
        for (key, _) in failed {
            invoked.remove(&key);
        }
        Ok(Posts {
            invoked,
            acknowledged,
        })
    }
}

/// Checks every `ok` `get_timeline` reply of `events`.
pub fn check_timelines(events: &[Event]) -> Result<TimelineReport, TimelineCheckError> {
    let graph = Graph::of(events)?;
    let posts = Posts::of(events)?;
    let mut report = TimelineReport::default();
    let mut bad = Vec::new();
    // The invocation of each process's open operation.
    let mut open: HashMap<u64, usize> = HashMap::new();
    // Sequence numbers seen per author, and the post each named; and the sequence number of
    // each post (posts are told apart by author, time and text, which loads make unique).
    let mut seqs: HashMap<(UserId, u64), Post> = HashMap::new();
    let mut numbered: HashMap<(UserId, u64, String), u64> = HashMap::new();
    // The acknowledgement of each user's create.
    let mut created: HashMap<UserId, usize> = HashMap::new();
    for (index, e) in events.iter().enumerate() {
        match e.kind {
            EventKind::Invoke => {
                open.insert(e.process, index);
                continue;
            }
            EventKind::Ok => {}
            _ => {
                open.remove(&e.process);
                continue;
            }
        }
        let invoked_at = open.remove(&e.process).unwrap_or(index);
        if e.f == "create_user" {
            let user = super::chirper_posts::arg_u64(e, index, "user")?;
            created.entry(user).or_insert(index);
        }
        // 6.
        if let Some(users) = missing_users(e) {
            for user in users {
                if let Some(at) = created.get(&user).filter(|at| **at < invoked_at) {
                    bad.push(BadTimeline {
                        index,
                        f: e.f.clone(),
                        user,
                        what: format!(
                            "answered that the user is missing, though its create was \
                             acknowledged at event #{at}, before the command began (event \
                             #{invoked_at})"
                        ),
                    });
                }
            }
            continue;
        }
        if e.f != "get_timeline" {
            continue;
        }
        let Some(list) = e.result.as_ref().and_then(|r| r.get("timeline")) else {
            continue;
        };
        let timeline: Vec<Post> =
            serde_json::from_value(list.clone()).map_err(|err| PostCheckError::Malformed {
                index,
                f: e.f.clone(),
                what: format!("timeline does not decode: {err}"),
            })?;
        let user = super::chirper_posts::arg_u64(e, index, "user")?;
        report.replies += 1;
        report.posts += timeline.len();
        let mut say = |what: String| {
            bad.push(BadTimeline {
                index,
                f: e.f.clone(),
                user,
                what,
            })
        };
        // 1.
        if let Some(w) = timeline.windows(2).find(|w| w[0] >= w[1]) {
            if w[0] == w[1] {
                say(format!("post {:?} is in it twice", w[0]));
            } else {
                say(format!("not sorted: {:?} before {:?}", w[0], w[1]));
            }
        }
        if timeline.len() > TIMELINE_CAP {
            say(format!(
                "{} posts, more than {TIMELINE_CAP}",
                timeline.len()
            ));
        }
        for p in &timeline {
            // 2.
            if p.author == user {
                say(format!("holds the reader's own post {p:?}"));
            }
            // 3.
            if graph.fresh.contains(&p.author) {
                let key = (p.author, p.time, p.text.clone());
                if !posts.invoked.contains(&key) {
                    say(format!("post {p:?} was never posted (or its post failed)"));
                }
            }
            let content = (p.author, p.time, p.text.clone());
            match numbered.get(&content) {
                Some(seq) if *seq != p.seq => say(format!(
                    "post {p:?} executed twice (also as sequence number {seq})"
                )),
                Some(_) => {}
                None => {
                    numbered.insert(content, p.seq);
                }
            }
            match seqs.get(&(p.author, p.seq)) {
                Some(other) if other != p => say(format!(
                    "post {p:?} and post {other:?} carry the same sequence number"
                )),
                Some(_) => {}
                None => {
                    seqs.insert((p.author, p.seq), p.clone());
                }
            }
            // 4.
            let followed = graph
                .followees
                .get(&user)
                .is_some_and(|f| f.contains(&p.author));
            if graph.fresh.contains(&user) && !followed {
                say(format!("post {p:?} by user {}, never followed", p.author));
            }
        }
        // 5.
        for (acked_at, post) in &posts.acknowledged {
            if *acked_at > invoked_at {
                break;
            }
            let follows = graph
                .followers
                .get(&post.author)
                .is_some_and(|f| f.contains(&user))
                && !graph.unstable.contains(&(user, post.author));
            if !follows {
                continue;
            }
            if timeline.binary_search(post).is_ok() {
                report.required += 1;
            } else if !graph.could_push_out(user, post) {
                say(format!(
                    "post {post:?}, acknowledged at event #{acked_at} before the read began \
                     (event #{invoked_at}), is missing"
                ));
            }
        }
    }
    if bad.is_empty() {
        Ok(report)
    } else {
        Err(TimelineCheckError::Bad(bad))
    }
}

/// The users an `ok` reply says are missing (`{"missing":[..]}`), if it says so.
fn missing_users(e: &Event) -> Option<Vec<UserId>> {
    let list = e.result.as_ref()?.get("missing")?.as_array()?;
    Some(list.iter().filter_map(|u| u.as_u64()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(process: u64, kind: EventKind, f: &str, args: serde_json::Value) -> Event {
        Event {
            process,
            kind,
            f: f.into(),
            args,
            result: None,
            time_ns: 0,
        }
    }

    fn ok(mut e: Event, result: serde_json::Value) -> Event {
        e.kind = EventKind::Ok;
        e.result = Some(result);
        e
    }

    fn post(author: UserId, seq: u64, time: u64) -> Post {
        Post {
            time,
            author,
            seq,
            text: format!("t{time}"),
        }
    }

    /// Users 1 and 2 created; 2 follows 1; 1 posts twice (acknowledged); 2 reads its
    /// timeline after both, with `timeline` as the reply.
    fn history(timeline: &[Post]) -> Vec<Event> {
        let create = |u: u64, following: &[u64], followers: &[u64]| {
            let args = json!({"user": u, "following": following, "followers": followers});
            vec![
                ev(0, EventKind::Invoke, "create_user", args.clone()),
                ok(
                    ev(0, EventKind::Invoke, "create_user", args),
                    json!({"created": true}),
                ),
            ]
        };
        let mut h = Vec::new();
        h.extend(create(1, &[], &[2]));
        h.extend(create(2, &[1], &[]));
        for (seq, time) in [(0, 10), (1, 20)] {
            let args = json!({"user": 1, "text": format!("t{time}"), "time": time});
            h.push(ev(1, EventKind::Invoke, "post", args.clone()));
            h.push(ok(
                ev(1, EventKind::Invoke, "post", args),
                json!({"posted": {"seq": seq}}),
            ));
        }
        h.push(ev(2, EventKind::Invoke, "get_timeline", json!({"user": 2})));
        h.push(ok(
            ev(2, EventKind::Invoke, "get_timeline", json!({"user": 2})),
            json!({ "timeline": timeline }),
        ));
        h
    }

    fn rules_broken(timeline: &[Post]) -> Vec<String> {
        match check_timelines(&history(timeline)) {
            Ok(_) => vec![],
            Err(TimelineCheckError::Bad(b)) => b.into_iter().map(|b| b.what).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_correct_reply_passes() {
        let report = check_timelines(&history(&[post(1, 0, 10), post(1, 1, 20)])).unwrap();
        assert_eq!((report.replies, report.posts, report.required), (1, 2, 2));
    }

    #[test]
    fn a_duplicated_post_is_caught() {
        let broken = rules_broken(&[post(1, 0, 10), post(1, 0, 10), post(1, 1, 20)]);
        assert!(broken.iter().any(|w| w.contains("twice")), "{broken:?}");
        // Executed twice: the same post again under the next sequence number.
        let broken = rules_broken(&[post(1, 0, 10), post(1, 1, 10), post(1, 2, 20)]);
        assert!(
            broken.iter().any(|w| w.contains("executed twice")),
            "{broken:?}"
        );
    }

    #[test]
    fn a_missing_acknowledged_post_is_caught() {
        let broken = rules_broken(&[post(1, 0, 10)]);
        assert!(
            broken.iter().any(|w| w.contains("is missing")),
            "{broken:?}"
        );
    }

    #[test]
    fn a_phantom_or_foreign_post_is_caught() {
        let broken = rules_broken(&[post(1, 0, 10), post(1, 1, 20), post(1, 2, 30)]);
        assert!(
            broken.iter().any(|w| w.contains("never posted")),
            "{broken:?}"
        );
        let broken = rules_broken(&[post(2, 0, 5), post(1, 0, 10), post(1, 1, 20)]);
        assert!(broken.iter().any(|w| w.contains("own post")), "{broken:?}");
        let broken = rules_broken(&[post(1, 1, 20), post(1, 0, 10)]);
        assert!(
            broken.iter().any(|w| w.contains("not sorted")),
            "{broken:?}"
        );
    }

    #[test]
    fn a_missing_answer_for_a_created_user_is_caught() {
        let mut h = history(&[post(1, 0, 10), post(1, 1, 20)]);
        let args = json!({"user": 1, "text": "t30", "time": 30});
        h.push(ev(3, EventKind::Invoke, "post", args.clone()));
        h.push(ok(
            ev(3, EventKind::Invoke, "post", args),
            json!({"missing": [1]}),
        ));
        match check_timelines(&h) {
            Err(TimelineCheckError::Bad(b)) => {
                assert_eq!((b.len(), b[0].f.as_str(), b[0].user), (1, "post", 1));
                assert!(b[0].to_string().contains("missing"), "{}", b[0]);
            }
            other => panic!("not caught: {other:?}"),
        }
        // A user never created may well be missing.
        let mut h = history(&[post(1, 0, 10), post(1, 1, 20)]);
        h.push(ev(3, EventKind::Invoke, "get_timeline", json!({"user": 9})));
        h.push(ok(
            ev(3, EventKind::Invoke, "get_timeline", json!({"user": 9})),
            json!({"missing": [9]}),
        ));
        check_timelines(&h).expect("a user never created is missing");
    }
}
