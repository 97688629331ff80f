//! Acknowledged Chirper posts are not lost: every post a client saw acknowledged (`ok`, with
//! its sequence number) is in the final timeline of each of the poster's followers, unless
//! the history holds at least [`TIMELINE_CAP`] other posts that could have reached that
//! timeline and sort after it (posts whose outcome is unknown included, by anyone the follower
//! followed or tried to follow): those may have pushed it out.
//!
//! The followers of a poster come from the history's `create_user` operations (the setup
//! records the social graph). A follower–followee pair that any `follow` or `unfollow` names,
//! whatever its outcome, is left out: whether the post had to reach that follower depends on
//! an order the history does not fix; so is a pair with a user whose first create found it
//! already there (an earlier load may have changed its edges). Every other pair is followed for the whole history, so the check
//! is exact for it. A post whose outcome is unknown (`info`) may or may not be anywhere.
//!
//! The final timelines are read by the caller after the load has stopped (`dssmr bench
//! chirper --check-posts` reads them through its proxy). This module only inspects; it does
//! no I/O.

use super::{Event, EventKind};
use dssmr_engine::app::chirper::{Post, UserId, TIMELINE_CAP};
use std::collections::{BTreeMap, BTreeSet};

/// The operations the check reads; a history recorded only for it may keep these alone
/// ([`super::History::in_memory_of`]): the timeline reads of a load are not among them.
pub const OPERATIONS: &[&str] = &["create_user", "follow", "unfollow", "post"];

/// What the check covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostReport {
    /// Acknowledged posts in the history.
    pub acknowledged: usize,
    /// (post, follower) deliveries checked.
    pub deliveries: usize,
    /// Of those, found in the follower's timeline.
    pub found: usize,
    /// Of those, legitimately pushed out by later posts.
    pub pushed_out: usize,
    /// Pairs left out because a follow or unfollow named them.
    pub unstable_pairs: usize,
}

/// An acknowledged post missing from a follower's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingPost {
    /// The post.
    pub post: Post,
    /// The follower whose timeline lacks it.
    pub follower: UserId,
}

/// Why the check could not judge or found losses.
#[derive(Debug, thiserror::Error)]
pub enum PostCheckError {
    /// An event of the history is not what Chirper records.
    #[error("event #{index} ({f}): {what}")]
    Malformed {
        /// Position in the history.
        index: usize,
        /// Operation name.
        f: String,
        /// What is wrong.
        what: String,
    },
    /// A follower's final timeline was not given.
    #[error("no final timeline of user {0}")]
    NoTimeline(UserId),
    /// Acknowledged posts are missing.
    #[error("{} acknowledged post deliveries missing, e.g. post {:?} from follower {}'s timeline", .0.len(), .0[0].post, .0[0].follower)]
    Lost(Vec<MissingPost>),
}

fn field<'a>(
    e: &'a Event,
    index: usize,
    v: Option<&'a serde_json::Value>,
    name: &str,
) -> Result<&'a serde_json::Value, PostCheckError> {
    v.and_then(|v| v.get(name))
        .ok_or_else(|| PostCheckError::Malformed {
            index,
            f: e.f.clone(),
            what: format!("no `{name}`"),
        })
}

fn number(e: &Event, index: usize, v: &serde_json::Value) -> Result<u64, PostCheckError> {
    v.as_u64().ok_or_else(|| PostCheckError::Malformed {
        index,
        f: e.f.clone(),
        what: format!("not a number: {v}"),
    })
}

/// The number argument `name` of event `e` (at `index`).
pub(super) fn arg_u64(e: &Event, index: usize, name: &str) -> Result<u64, PostCheckError> {
    number(e, index, field(e, index, Some(&e.args), name)?)
}

/// The users `timelines` must cover: every follower of a poster of an acknowledged post.
pub fn followers_to_read(events: &[Event]) -> Result<BTreeSet<UserId>, PostCheckError> {
    let g = Graph::of(events)?;
    let posters: BTreeSet<UserId> = acknowledged_posts(events)?
        .iter()
        .map(|p| p.author)
        .collect();
    Ok(posters
        .iter()
        .flat_map(|p| g.followers.get(p).into_iter().flatten().copied())
        .collect())
}

/// Checks `events` against the final `timelines` (user → timeline, ascending).
pub fn check_posts(
    events: &[Event],
    timelines: &BTreeMap<UserId, Vec<Post>>,
) -> Result<PostReport, PostCheckError> {
    let g = Graph::of(events)?;
    let posts = acknowledged_posts(events)?;
    let mut report = PostReport {
        acknowledged: posts.len(),
        unstable_pairs: g.unstable.len(),
        ..PostReport::default()
    };
    let mut missing = Vec::new();
    for post in &posts {
        for &follower in g.followers.get(&post.author).into_iter().flatten() {
            if g.unstable.contains(&(follower, post.author)) {
                continue;
            }
            let timeline = timelines
                .get(&follower)
                .ok_or(PostCheckError::NoTimeline(follower))?;
            report.deliveries += 1;
            if timeline.binary_search(post).is_ok() {
                report.found += 1;
            } else if g.could_push_out(follower, post) {
                report.pushed_out += 1;
            } else {
                missing.push(MissingPost {
                    post: post.clone(),
                    follower,
                });
            }
        }
    }
    if missing.is_empty() {
        Ok(report)
    } else {
        Err(PostCheckError::Lost(missing))
    }
}

/// The posts of `ok` `post` completions, with the sequence number of their reply.
fn acknowledged_posts(events: &[Event]) -> Result<Vec<Post>, PostCheckError> {
    let mut out = Vec::new();
    for (index, e) in events.iter().enumerate() {
        if e.kind != EventKind::Ok || e.f != "post" {
            continue;
        }
        let args = Some(&e.args);
        let posted = field(e, index, e.result.as_ref(), "posted")?;
        out.push(Post {
            time: number(e, index, field(e, index, args, "time")?)?,
            author: number(e, index, field(e, index, args, "user")?)?,
            seq: number(e, index, field(e, index, Some(posted), "seq")?)?,
            text: field(e, index, args, "text")?
                .as_str()
                .unwrap_or_default()
                .to_string(),
        });
    }
    Ok(out)
}

/// The social graph the setup created, and the pairs the load changed.
pub(super) struct Graph {
    /// Followee → followers, from `ok` creates.
    pub(super) followers: BTreeMap<UserId, BTreeSet<UserId>>,
    /// (follower, followee) named by a follow or unfollow, or with an end that existed before
    /// the history (its first create found it).
    pub(super) unstable: BTreeSet<(UserId, UserId)>,
    /// Follower → everyone it followed at some point or tried to follow.
    pub(super) followees: BTreeMap<UserId, BTreeSet<UserId>>,
    /// Author → the (time, author) of every post it invoked (any outcome), sorted.
    posts_by: BTreeMap<UserId, Vec<(u64, UserId)>>,
    /// Users the history created (their first create found them absent).
    pub(super) fresh: BTreeSet<UserId>,
}

impl Graph {
    /// Whether at least [`TIMELINE_CAP`] posts other than `post` that may have reached
    /// `follower`'s timeline sort after `post` (ties counted against the check).
    pub(super) fn could_push_out(&self, follower: UserId, post: &Post) -> bool {
        let key = (post.time, post.author);
        let later: usize = self
            .followees
            .get(&follower)
            .into_iter()
            .flatten()
            .filter_map(|a| self.posts_by.get(a))
            .map(|ps| ps.len() - ps.partition_point(|k| *k < key))
            .sum();
        // `post` itself is among them.
        later.saturating_sub(1) >= TIMELINE_CAP
    }
}

impl Graph {
    pub(super) fn of(events: &[Event]) -> Result<Graph, PostCheckError> {
        let mut followers: BTreeMap<UserId, BTreeSet<UserId>> = BTreeMap::new();
        let mut unstable = BTreeSet::new();
        let (mut fresh, mut preexisting) = (BTreeSet::new(), BTreeSet::new());
        let mut posts_by: BTreeMap<UserId, Vec<(u64, UserId)>> = BTreeMap::new();
        let mut extra = Vec::new();
        for (index, e) in events.iter().enumerate() {
            let args = Some(&e.args);
            match (e.kind, e.f.as_str()) {
                (EventKind::Ok, "create_user") => {
                    let created = e.result.as_ref().and_then(|r| r["created"].as_bool());
                    // An edge may be recorded on either end: as a follower of the followee
                    // or as a followee of the follower.
                    let user = number(e, index, field(e, index, args, "user")?)?;
                    if created == Some(false) && !fresh.contains(&user) {
                        preexisting.insert(user);
                    }
                    if created == Some(true) {
                        fresh.insert(user);
                    }
                    let list = field(e, index, args, "followers")?;
                    for f in list.as_array().into_iter().flatten() {
                        followers
                            .entry(user)
                            .or_default()
                            .insert(number(e, index, f)?);
                    }
                    let list = field(e, index, args, "following")?;
                    for f in list.as_array().into_iter().flatten() {
                        followers
                            .entry(number(e, index, f)?)
                            .or_default()
                            .insert(user);
                    }
                }
                (EventKind::Invoke, "follow" | "unfollow") => {
                    let follower = number(e, index, field(e, index, args, "follower")?)?;
                    let followee = number(e, index, field(e, index, args, "followee")?)?;
                    unstable.insert((follower, followee));
                    if e.f == "follow" {
                        extra.push((follower, followee));
                    }
                }
                (EventKind::Invoke, "post") => {
                    let user = number(e, index, field(e, index, args, "user")?)?;
                    let time = number(e, index, field(e, index, args, "time")?)?;
                    posts_by.entry(user).or_default().push((time, user));
                }
                _ => {}
            }
        }
        // Edges of a user that existed before the history began may have changed since the
        // graph was generated.
        for (&followee, fs) in &followers {
            for &follower in fs {
                if preexisting.contains(&followee) || preexisting.contains(&follower) {
                    unstable.insert((follower, followee));
                }
            }
        }
        let mut followees: BTreeMap<UserId, BTreeSet<UserId>> = BTreeMap::new();
        for (&followee, fs) in &followers {
            for &follower in fs {
                followees.entry(follower).or_default().insert(followee);
            }
        }
        for (follower, followee) in extra {
            followees.entry(follower).or_default().insert(followee);
        }
        for ps in posts_by.values_mut() {
            ps.sort_unstable();
        }
        let fresh = fresh.difference(&preexisting).copied().collect();
        Ok(Graph {
            followers,
            unstable,
            followees,
            posts_by,
            fresh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(
        kind: EventKind,
        f: &str,
        args: serde_json::Value,
        result: Option<serde_json::Value>,
    ) -> Event {
        Event {
            process: 0,
            kind,
            f: f.into(),
            args,
            result,
            time_ns: 0,
        }
    }

    fn post(time: u64, author: UserId, seq: u64) -> Post {
        Post {
            time,
            author,
            seq,
            text: "x".into(),
        }
    }

    /// User 1 is followed by 2 and 3 (recorded on either end); 3's edge is touched by an
    /// unfollow.
    fn history() -> Vec<Event> {
        vec![
            ev(
                EventKind::Ok,
                "create_user",
                json!({"user": 1, "following": [], "followers": [2]}),
                Some(json!({"created": true})),
            ),
            ev(
                EventKind::Ok,
                "create_user",
                json!({"user": 3, "following": [1], "followers": []}),
                Some(json!({"created": true})),
            ),
            ev(
                EventKind::Invoke,
                "unfollow",
                json!({"follower": 3, "followee": 1}),
                None,
            ),
            ev(
                EventKind::Invoke,
                "post",
                json!({"user": 1, "text": "x", "time": 10}),
                None,
            ),
            ev(
                EventKind::Ok,
                "post",
                json!({"user": 1, "text": "x", "time": 10}),
                Some(json!({"posted": {"seq": 0}})),
            ),
            ev(
                EventKind::Info,
                "post",
                json!({"user": 1, "text": "x", "time": 11}),
                None,
            ),
        ]
    }

    #[test]
    fn an_acknowledged_post_in_the_timeline_passes() {
        let timelines = BTreeMap::from([(2, vec![post(10, 1, 0)])]);
        let r = check_posts(&history(), &timelines).unwrap();
        assert_eq!(
            (r.acknowledged, r.deliveries, r.found, r.unstable_pairs),
            (1, 1, 1, 1)
        );
        assert_eq!(
            followers_to_read(&history()).unwrap(),
            BTreeSet::from([2, 3])
        );
    }

    #[test]
    fn a_lost_acknowledged_post_fails() {
        let timelines = BTreeMap::from([(2, vec![post(5, 4, 0)])]);
        match check_posts(&history(), &timelines) {
            Err(PostCheckError::Lost(m)) => assert_eq!(
                m,
                vec![MissingPost {
                    post: post(10, 1, 0),
                    follower: 2
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_post_pushed_out_by_later_posts_is_not_lost() {
        // 100 later posts by user 5, whom 2 follows (by a follow whose outcome is unknown):
        // they may have pushed the post out of 2's timeline.
        let mut h = history();
        h.push(ev(
            EventKind::Invoke,
            "follow",
            json!({"follower": 2, "followee": 5}),
            None,
        ));
        for i in 0..TIMELINE_CAP as u64 {
            h.push(ev(
                EventKind::Invoke,
                "post",
                json!({"user": 5, "text": "y", "time": 100 + i}),
                None,
            ));
        }
        let later: Vec<Post> = (0..TIMELINE_CAP as u64)
            .map(|i| post(100 + i, 5, i))
            .collect();
        let r = check_posts(&h, &BTreeMap::from([(2, later)])).unwrap();
        assert_eq!(r.pushed_out, 1);
        // Posts the follower's timeline could not hold do not excuse the loss, whatever the
        // timeline holds; nor do 99 later posts.
        let full: Vec<Post> = (0..TIMELINE_CAP as u64).map(|i| post(i, 4, i)).collect();
        assert!(matches!(
            check_posts(&history(), &BTreeMap::from([(2, full)])),
            Err(PostCheckError::Lost(_))
        ));
        h.pop();
        assert!(matches!(
            check_posts(&h, &BTreeMap::from([(2, vec![])])),
            Err(PostCheckError::Lost(_))
        ));
    }

    #[test]
    fn edges_of_users_that_existed_before_the_history_are_not_judged() {
        let mut h = history();
        h.insert(
            0,
            ev(
                EventKind::Ok,
                "create_user",
                json!({"user": 2, "following": [1], "followers": []}),
                Some(json!({"created": false})),
            ),
        );
        let r = check_posts(&h, &BTreeMap::new()).unwrap();
        assert_eq!((r.deliveries, r.unstable_pairs), (0, 2));
    }

    #[test]
    fn a_follower_whose_timeline_was_not_read_is_an_error() {
        assert!(matches!(
            check_posts(&history(), &BTreeMap::new()),
            Err(PostCheckError::NoTimeline(2))
        ));
    }
}
