//! Chirper: the Twitter-like social network of the DS-SMR paper (§5.2), as a
//! [`StateMachine`].
//!
//! Every user is one variable ([`user_var`]) holding a [`User`]: its follow edges, its own
//! recent posts and its materialized timeline. `getTimeline` therefore touches one variable,
//! `follow` / `unfollow` two, and `post` the poster plus all of its followers, which only the
//! poster's value reveals ([`StateMachine::dependencies`]). Users are placed by interest (a
//! user's community decides its partition) or, for a placement that knows nothing of the social
//! graph, by a hash of the user id ([`UserPlacement`], [`Chirper::place`]); [`graph`] generates
//! social graphs with the same community structure.
//!
//! This module owns the command semantics and the placement rule; it never creates or deletes
//! users (the engine does) and never sees partitions beyond `place`. [`json`] owns the JSON
//! form of commands and replies (histories, `dssmr client` output).

pub mod graph;
pub mod json;

use crate::app::state_machine::{hash_slot, StateMachine, Store};
use crate::ids::{GroupId, VarId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A Chirper user id.
pub type UserId = u64;

/// How many of its own posts a user keeps (the oldest are dropped).
pub const POST_CAP: usize = 100;
/// How many posts a materialized timeline keeps (the oldest are dropped).
pub const TIMELINE_CAP: usize = 100;
pub use crate::config::{UserPlacement, DEFAULT_COMMUNITY_SIZE};

/// One post. The field order is the timeline order: by time, then author, then sequence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Post {
    /// Client-chosen time (µs) that orders timelines.
    pub time: u64,
    /// The user who posted.
    pub author: UserId,
    /// The author's sequence number of the post (0, 1, 2, ...).
    pub seq: u64,
    /// The message.
    pub text: String,
}

/// The value of a user variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id (the variable is [`user_var`] of it).
    pub id: UserId,
    /// Users following this one.
    pub followers: BTreeSet<UserId>,
    /// Users this one follows.
    pub following: BTreeSet<UserId>,
    /// Own posts, oldest first, at most [`POST_CAP`].
    pub posts: Vec<Post>,
    /// Sequence number of the next own post.
    pub next_seq: u64,
    /// Materialized timeline: posts of followed users, sorted ascending, at most
    /// [`TIMELINE_CAP`]. A user's own posts are not in it.
    pub timeline: Vec<Post>,
}

impl User {
    /// A new user with no edges and no posts.
    pub fn new(id: UserId) -> Self {
        User {
            id,
            ..User::default()
        }
    }

    /// Inserts `post` into the timeline, keeping it sorted and capped.
    fn insert_into_timeline(&mut self, post: Post) {
        if let Err(pos) = self.timeline.binary_search(&post) {
            self.timeline.insert(pos, post);
            cap_front(&mut self.timeline, TIMELINE_CAP);
        }
    }

    /// Merges `posts` into the timeline, keeping it sorted, deduplicated and capped.
    fn merge_into_timeline(&mut self, posts: &[Post]) {
        self.timeline.extend_from_slice(posts);
        self.timeline.sort();
        self.timeline.dedup();
        cap_front(&mut self.timeline, TIMELINE_CAP);
    }
}

/// Drops the first elements of `v` so that at most `cap` remain.
fn cap_front<T>(v: &mut Vec<T>, cap: usize) {
    if v.len() > cap {
        v.drain(..v.len() - cap);
    }
}

/// A Chirper command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChirperCommand {
    /// `user` posts `text`; the post reaches the timelines of all its followers.
    Post {
        /// The poster.
        user: UserId,
        /// The message.
        text: String,
        /// Client-chosen time (µs) that orders timelines.
        time: u64,
    },
    /// `follower` starts following `followee`.
    Follow {
        /// Who follows.
        follower: UserId,
        /// Who is followed.
        followee: UserId,
    },
    /// `follower` stops following `followee`.
    Unfollow {
        /// Who unfollows.
        follower: UserId,
        /// Who is unfollowed.
        followee: UserId,
    },
    /// Reads the materialized timeline of `user`.
    GetTimeline {
        /// Whose timeline.
        user: UserId,
    },
}

impl ChirperCommand {
    /// The users the command names (ω), deduplicated, in command order.
    pub fn users(&self) -> Vec<UserId> {
        match self {
            ChirperCommand::Post { user, .. } | ChirperCommand::GetTimeline { user } => {
                vec![*user]
            }
            ChirperCommand::Follow { follower, followee }
            | ChirperCommand::Unfollow { follower, followee } => {
                if follower == followee {
                    vec![*follower]
                } else {
                    vec![*follower, *followee]
                }
            }
        }
    }
}

/// What a Chirper command returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChirperReply {
    /// The post was stored with this sequence number of its author.
    Posted {
        /// The author's sequence number of the post.
        seq: u64,
    },
    /// `Follow`: true if the edge was added (false if it existed or was a self-follow).
    Followed(bool),
    /// `Unfollow`: true if the edge was removed (false if it did not exist).
    Unfollowed(bool),
    /// `GetTimeline`: the materialized timeline, oldest first.
    Timeline(Vec<Post>),
    /// Some users of the command do not exist (sorted); the command did nothing.
    Missing(Vec<UserId>),
}

/// The Chirper state machine; each variable holds a [`User`].
#[derive(Clone, Debug)]
pub struct Chirper {
    /// How many consecutive user ids form one community (see [`community_of`]).
    pub community_size: u64,
    /// Where users are created.
    pub placement: UserPlacement,
}

impl Chirper {
    /// The Chirper app of a cluster config (its community size and placement).
    pub fn for_cluster(config: &crate::config::ClusterConfig) -> Self {
        let settings = config.chirper_settings();
        Chirper::new(settings.community_size).with_placement(settings.placement)
    }
}

impl Default for Chirper {
    fn default() -> Self {
        Chirper::new(DEFAULT_COMMUNITY_SIZE)
    }
}

impl Chirper {
    /// A Chirper whose communities have `community_size` users, placed by interest.
    pub fn new(community_size: u64) -> Self {
        Chirper {
            community_size,
            placement: UserPlacement::Interest,
        }
    }

    /// The same Chirper with users created by `placement`.
    pub fn with_placement(self, placement: UserPlacement) -> Self {
        Chirper { placement, ..self }
    }
}

/// The variable of user `u`: `u{u}`.
pub fn user_var(u: UserId) -> VarId {
    VarId(format!("u{u}"))
}

/// The user of a variable named by [`user_var`]; `None` for any other name (including
/// non-canonical spellings such as `u007` or `u+7`).
pub fn user_of(v: &VarId) -> Option<UserId> {
    let digits = v.as_str().strip_prefix('u')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The interest community of user `u`: users `0..size` form community 0, `size..2*size`
/// community 1, and so on. A zero `community_size` counts as 1.
pub fn community_of(u: UserId, community_size: u64) -> u64 {
    u / community_size.max(1)
}

/// Runs `cmd` once every user of ω is known to be present; `Err` carries the reply for a user
/// that turned out to be absent.
fn run(cmd: &ChirperCommand, store: &mut dyn Store<User>) -> Result<ChirperReply, ChirperReply> {
    let absent = |u: UserId| ChirperReply::Missing(vec![u]);
    Ok(match cmd {
        ChirperCommand::Post { user, text, time } => {
            let poster = store
                .get_mut(&user_var(*user))
                .ok_or_else(|| absent(*user))?;
            let post = Post {
                time: *time,
                author: *user,
                seq: poster.next_seq,
                text: text.clone(),
            };
            poster.next_seq += 1;
            poster.posts.push(post.clone());
            cap_front(&mut poster.posts, POST_CAP);
            let followers: Vec<UserId> = poster.followers.iter().copied().collect();
            for f in followers {
                // Absent followers live in another partition, which runs this command for them.
                if let Some(follower) = store.get_mut(&user_var(f)) {
                    follower.insert_into_timeline(post.clone());
                }
            }
            ChirperReply::Posted { seq: post.seq }
        }
        ChirperCommand::Follow { follower, followee } => {
            let a = store
                .get(&user_var(*follower))
                .ok_or_else(|| absent(*follower))?;
            if follower == followee || a.following.contains(followee) {
                return Ok(ChirperReply::Followed(false));
            }
            let b = store
                .get_mut(&user_var(*followee))
                .ok_or_else(|| absent(*followee))?;
            b.followers.insert(*follower);
            let backfill = b.posts.clone();
            let a = store
                .get_mut(&user_var(*follower))
                .ok_or_else(|| absent(*follower))?;
            a.following.insert(*followee);
            a.merge_into_timeline(&backfill);
            ChirperReply::Followed(true)
        }
        ChirperCommand::Unfollow { follower, followee } => {
            let a = store
                .get_mut(&user_var(*follower))
                .ok_or_else(|| absent(*follower))?;
            if !a.following.remove(followee) {
                return Ok(ChirperReply::Unfollowed(false));
            }
            a.timeline.retain(|p| p.author != *followee);
            let b = store
                .get_mut(&user_var(*followee))
                .ok_or_else(|| absent(*followee))?;
            b.followers.remove(follower);
            ChirperReply::Unfollowed(true)
        }
        ChirperCommand::GetTimeline { user } => {
            let u = store.get(&user_var(*user)).ok_or_else(|| absent(*user))?;
            ChirperReply::Timeline(u.timeline.clone())
        }
    })
}

impl StateMachine for Chirper {
    type Command = ChirperCommand;
    type Reply = ChirperReply;
    type Value = User;

    fn variables(&self, cmd: &ChirperCommand) -> Vec<VarId> {
        cmd.users().into_iter().map(user_var).collect()
    }

    fn dependencies(&self, cmd: &ChirperCommand, store: &dyn Store<User>) -> Vec<VarId> {
        match cmd {
            ChirperCommand::Post { user, .. } => store
                .get(&user_var(*user))
                .map(|poster| poster.followers.iter().copied().map(user_var).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn may_have_dependencies(&self, cmd: &ChirperCommand) -> bool {
        matches!(cmd, ChirperCommand::Post { .. })
    }

    fn is_read_only(&self, cmd: &ChirperCommand) -> bool {
        matches!(cmd, ChirperCommand::GetTimeline { .. })
    }

    fn execute(&self, cmd: &ChirperCommand, store: &mut dyn Store<User>) -> ChirperReply {
        // Check ω before the first write, so a missing user leaves the store untouched.
        let mut absent: Vec<UserId> = cmd
            .users()
            .into_iter()
            .filter(|u| store.get(&user_var(*u)).is_none())
            .collect();
        if !absent.is_empty() {
            absent.sort_unstable();
            return ChirperReply::Missing(absent);
        }
        run(cmd, store).unwrap_or_else(|missing| missing)
    }

    fn missing(&self, _cmd: &ChirperCommand, missing: &[VarId]) -> ChirperReply {
        let mut users: Vec<UserId> = missing.iter().filter_map(user_of).collect();
        users.sort_unstable();
        users.dedup();
        ChirperReply::Missing(users)
    }

    /// Interest-based placement f(uid): the user's community, round-robin over the
    /// partitions; with [`UserPlacement::Hash`], and for names that are not user variables,
    /// the stable hash of the name.
    fn place(&self, var: &VarId, partitions: &[GroupId]) -> GroupId {
        match user_of(var).filter(|_| self.placement == UserPlacement::Interest) {
            Some(u) => {
                let community = community_of(u, self.community_size);
                partitions[(community % partitions.len() as u64) as usize]
            }
            None => partitions[hash_slot(var, partitions.len())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn users(ids: &[UserId]) -> HashMap<VarId, User> {
        ids.iter().map(|u| (user_var(*u), User::new(*u))).collect()
    }

    fn user(s: &HashMap<VarId, User>, u: UserId) -> &User {
        &s[&user_var(u)]
    }

    fn post(user: UserId, time: u64) -> ChirperCommand {
        ChirperCommand::Post {
            user,
            text: format!("{user}@{time}"),
            time,
        }
    }

    fn follow(follower: UserId, followee: UserId) -> ChirperCommand {
        ChirperCommand::Follow { follower, followee }
    }

    fn unfollow(follower: UserId, followee: UserId) -> ChirperCommand {
        ChirperCommand::Unfollow { follower, followee }
    }

    fn run_all(s: &mut HashMap<VarId, User>, cmds: &[ChirperCommand]) -> Vec<ChirperReply> {
        cmds.iter()
            .map(|c| Chirper::default().execute(c, s))
            .collect()
    }

    #[test]
    fn user_var_round_trips() {
        for u in [0, 7, 42, u64::MAX] {
            assert_eq!(user_of(&user_var(u)), Some(u));
        }
        assert_eq!(user_var(42), VarId::new("u42"));
        for bad in [
            "",
            "u",
            "42",
            "x42",
            "u-1",
            "u+1",
            "u007",
            "u4a",
            "u99999999999999999999",
        ] {
            assert_eq!(user_of(&VarId::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn variables_and_dependencies() {
        let c = Chirper::default();
        assert_eq!(c.variables(&post(3, 0)), vec![user_var(3)]);
        assert_eq!(c.variables(&follow(3, 1)), vec![user_var(3), user_var(1)]);
        assert_eq!(c.variables(&unfollow(2, 2)), vec![user_var(2)]);
        assert_eq!(
            c.variables(&ChirperCommand::GetTimeline { user: 9 }),
            vec![user_var(9)]
        );
        assert!(c.may_have_dependencies(&post(1, 0)));
        assert!(!c.may_have_dependencies(&follow(1, 2)));

        let mut s = users(&[1, 2, 3]);
        run_all(&mut s, &[follow(2, 1), follow(3, 1)]);
        assert_eq!(
            c.dependencies(&post(1, 0), &s),
            vec![user_var(2), user_var(3)]
        );
        assert!(c.dependencies(&post(2, 0), &s).is_empty());
        assert!(c.dependencies(&post(99, 0), &s).is_empty());
        assert!(c.dependencies(&follow(2, 3), &s).is_empty());
    }

    #[test]
    fn post_reaches_present_followers_only() {
        let mut s = users(&[1, 2, 3, 4]);
        run_all(&mut s, &[follow(2, 1), follow(3, 1), follow(4, 1)]);
        // User 4 lives in another partition: drop it from this store.
        s.remove(&user_var(4));
        let replies = run_all(&mut s, &[post(1, 10), post(1, 20)]);
        assert_eq!(
            replies,
            vec![
                ChirperReply::Posted { seq: 0 },
                ChirperReply::Posted { seq: 1 }
            ]
        );
        let p1 = user(&s, 1);
        assert_eq!(p1.next_seq, 2);
        assert_eq!(p1.posts.len(), 2);
        assert!(p1.timeline.is_empty(), "own posts stay out of own timeline");
        for f in [2, 3] {
            let tl: Vec<(u64, u64)> = user(&s, f)
                .timeline
                .iter()
                .map(|p| (p.time, p.seq))
                .collect();
            assert_eq!(tl, vec![(10, 0), (20, 1)]);
        }
    }

    #[test]
    fn timeline_is_sorted_by_time_then_author() {
        let mut s = users(&[1, 2, 3]);
        run_all(
            &mut s,
            &[
                follow(3, 1),
                follow(3, 2),
                post(1, 30),
                post(2, 10),
                post(1, 10),
                post(2, 20),
            ],
        );
        let tl: Vec<(u64, UserId)> = user(&s, 3)
            .timeline
            .iter()
            .map(|p| (p.time, p.author))
            .collect();
        assert_eq!(tl, vec![(10, 1), (10, 2), (20, 2), (30, 1)]);
        let replies = run_all(&mut s, &[ChirperCommand::GetTimeline { user: 3 }]);
        assert_eq!(
            replies,
            vec![ChirperReply::Timeline(user(&s, 3).timeline.clone())]
        );
    }

    #[test]
    fn follow_backfills_and_is_idempotent() {
        let mut s = users(&[1, 2]);
        run_all(&mut s, &[post(1, 5), post(1, 1)]);
        let replies = run_all(&mut s, &[follow(2, 1), follow(2, 1), follow(2, 2)]);
        assert_eq!(
            replies,
            vec![
                ChirperReply::Followed(true),
                ChirperReply::Followed(false),
                ChirperReply::Followed(false)
            ]
        );
        assert!(user(&s, 1).followers.contains(&2));
        assert!(user(&s, 2).following.contains(&1));
        assert!(user(&s, 2).followers.is_empty());
        let times: Vec<u64> = user(&s, 2).timeline.iter().map(|p| p.time).collect();
        assert_eq!(times, vec![1, 5]);
    }

    #[test]
    fn unfollow_removes_edges_and_posts() {
        let mut s = users(&[1, 2, 3]);
        run_all(
            &mut s,
            &[follow(3, 1), follow(3, 2), post(1, 1), post(2, 2)],
        );
        let replies = run_all(&mut s, &[unfollow(3, 1), unfollow(3, 1), unfollow(1, 3)]);
        assert_eq!(
            replies,
            vec![
                ChirperReply::Unfollowed(true),
                ChirperReply::Unfollowed(false),
                ChirperReply::Unfollowed(false)
            ]
        );
        assert!(user(&s, 1).followers.is_empty());
        assert_eq!(user(&s, 3).following, BTreeSet::from([2]));
        let authors: Vec<UserId> = user(&s, 3).timeline.iter().map(|p| p.author).collect();
        assert_eq!(authors, vec![2]);
        // Later posts of 1 no longer reach 3.
        run_all(&mut s, &[post(1, 9)]);
        assert_eq!(user(&s, 3).timeline.len(), 1);
    }

    #[test]
    fn posts_and_timelines_are_capped() {
        let mut s = users(&[1, 2, 3]);
        run_all(&mut s, &[follow(3, 1)]);
        let n = (POST_CAP + 20) as u64;
        for t in 0..n {
            run_all(&mut s, &[post(1, t)]);
        }
        let p1 = user(&s, 1);
        assert_eq!(p1.posts.len(), POST_CAP);
        assert_eq!(p1.posts[0].seq, n - POST_CAP as u64);
        assert_eq!(p1.next_seq, n);
        let tl = &user(&s, 3).timeline;
        assert_eq!(tl.len(), TIMELINE_CAP);
        assert_eq!(tl[0].time, n - TIMELINE_CAP as u64);
        assert!(tl.windows(2).all(|w| w[0] < w[1]));
        // An older post than everything in a full timeline is dropped at once.
        run_all(&mut s, &[follow(3, 2), post(2, 0)]);
        assert_eq!(user(&s, 3).timeline.len(), TIMELINE_CAP);
        assert!(user(&s, 3).timeline.iter().all(|p| p.author == 1));
        // Backfill merges and caps: 2's new post is the newest.
        run_all(&mut s, &[post(2, 10_000), unfollow(3, 2), follow(3, 2)]);
        let tl = &user(&s, 3).timeline;
        assert_eq!(tl.len(), TIMELINE_CAP);
        assert_eq!(tl.last().map(|p| p.author), Some(2));
    }

    #[test]
    fn missing_users_change_nothing() {
        let c = Chirper::default();
        let mut s = users(&[1]);
        assert_eq!(
            c.execute(&follow(1, 5), &mut s),
            ChirperReply::Missing(vec![5])
        );
        assert_eq!(
            c.execute(&follow(9, 5), &mut s),
            ChirperReply::Missing(vec![5, 9])
        );
        assert_eq!(
            c.execute(&post(2, 0), &mut s),
            ChirperReply::Missing(vec![2])
        );
        assert_eq!(user(&s, 1), &User::new(1));
        assert_eq!(
            c.missing(
                &follow(9, 5),
                &[user_var(9), user_var(5), VarId::new("junk")]
            ),
            ChirperReply::Missing(vec![5, 9])
        );
    }

    #[test]
    fn placement_follows_communities() {
        let c = Chirper::new(10);
        let parts = [GroupId(1), GroupId(2), GroupId(3)];
        assert_eq!(c.place(&user_var(0), &parts), GroupId(1));
        assert_eq!(c.place(&user_var(9), &parts), GroupId(1));
        assert_eq!(c.place(&user_var(10), &parts), GroupId(2));
        assert_eq!(c.place(&user_var(25), &parts), GroupId(3));
        assert_eq!(c.place(&user_var(30), &parts), GroupId(1));
        assert_eq!(
            c.place(&user_var(u64::MAX), &parts),
            parts[((u64::MAX / 10) % 3) as usize]
        );
        let junk = VarId::new("junk");
        assert_eq!(c.place(&junk, &parts), parts[hash_slot(&junk, 3)]);
        assert_eq!(Chirper::new(0).place(&user_var(4), &parts), GroupId(2));
        assert_eq!(Chirper::default().community_size, DEFAULT_COMMUNITY_SIZE);
    }

    #[test]
    fn hash_placement_ignores_communities() {
        let c = Chirper::new(10).with_placement(UserPlacement::Hash);
        let parts = [GroupId(1), GroupId(2), GroupId(3), GroupId(4)];
        let mut seen = BTreeSet::new();
        for u in 0..10 {
            let v = user_var(u);
            assert_eq!(c.place(&v, &parts), parts[hash_slot(&v, 4)]);
            seen.insert(c.place(&v, &parts));
        }
        assert!(seen.len() > 1, "one community spreads over partitions");
        assert_eq!("hash".parse(), Ok(UserPlacement::Hash));
        assert_eq!("interest".parse(), Ok(UserPlacement::Interest));
        assert!("range".parse::<UserPlacement>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let mut s = users(&[1, 2]);
        run_all(&mut s, &[follow(2, 1), post(1, 3)]);
        let u = user(&s, 2).clone();
        let bytes = postcard::to_allocvec(&u).expect("encode");
        assert_eq!(postcard::from_bytes::<User>(&bytes).expect("decode"), u);
        for cmd in [
            post(1, 2),
            follow(1, 2),
            unfollow(2, 1),
            ChirperCommand::GetTimeline { user: 4 },
        ] {
            let bytes = postcard::to_allocvec(&cmd).expect("encode");
            assert_eq!(
                postcard::from_bytes::<ChirperCommand>(&bytes).expect("decode"),
                cmd
            );
        }
        let reply = ChirperReply::Timeline(u.timeline.clone());
        let bytes = postcard::to_allocvec(&reply).expect("encode");
        assert_eq!(
            postcard::from_bytes::<ChirperReply>(&bytes).expect("decode"),
            reply
        );
    }
}
