//! Synthetic social graphs for Chirper workloads: seedable, with interest communities and
//! skewed (power-law-like) follower counts.
//!
//! Users `0..users` are grouped in contiguous communities of `community_size` ids, the same
//! grouping [`super::Chirper::place`] uses, so an interest-based placement puts most follow
//! edges inside one partition. Each user follows about `avg_follows` others; each followee is
//! drawn from the user's own community with probability `intra_community`, else from all
//! users. Within the candidate set the draw is Zipf (exponent 1) over a random ranking of the
//! set, so a few users collect most followers.
//!
//! Generation is pure: the same [`GraphSpec`] gives the same graph (for a given `rand`
//! version, whose `StdRng` algorithm is fixed within a major version). It does no I/O and
//! knows nothing about partitions or commands.

use super::{community_of, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// How many Zipf draws may hit self or an existing followee before the generator picks
/// uniformly among the remaining candidates instead.
const ZIPF_TRIES: usize = 32;

/// What graph to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSpec {
    /// Number of users; ids are `0..users`.
    pub users: u64,
    /// Users per community (contiguous ids); 0 counts as 1.
    pub community_size: u64,
    /// Mean number of users each user follows (each user draws its count uniformly from
    /// `avg - avg/2 ..= avg + avg/2`, capped at `users - 1`).
    pub avg_follows: usize,
    /// Probability that a followee is drawn from the follower's own community (e.g. 0.9);
    /// otherwise it is drawn from all users. Clamped to `0.0..=1.0`.
    pub intra_community: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for GraphSpec {
    fn default() -> Self {
        GraphSpec {
            users: 1_000,
            community_size: super::DEFAULT_COMMUNITY_SIZE,
            avg_follows: 10,
            intra_community: 0.9,
            seed: 0,
        }
    }
}

/// A generated follow graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocialGraph {
    /// Number of users; ids are `0..users`.
    pub users: u64,
    /// Users per community, as in the spec.
    pub community_size: u64,
    /// Follow edges `(follower, followee)`: no self-follows, no duplicates, sorted ascending
    /// (by follower, then followee) as generated.
    pub follows: Vec<(UserId, UserId)>,
}

/// A candidate set in ranked order: its first entry is the most popular.
struct Ranked<'a> {
    members: &'a [UserId],
}

impl Ranked<'_> {
    /// Draws a member not equal to `me` and not in `taken`: Zipf over the ranking, falling
    /// back to a uniform choice among the remaining members. `None` when none remain.
    fn draw(
        &self,
        rng: &mut StdRng,
        zipf_cdf: &[f64],
        me: UserId,
        taken: &BTreeSet<UserId>,
    ) -> Option<UserId> {
        let m = self.members.len();
        let cdf = zipf_cdf.get(..m)?;
        let total = *cdf.last()?;
        let free = |u: &UserId| *u != me && !taken.contains(u);
        for _ in 0..ZIPF_TRIES {
            let x = rng.random::<f64>() * total;
            let rank = cdf.partition_point(|&c| c <= x).min(m - 1);
            let u = self.members[rank];
            if free(&u) {
                return Some(u);
            }
        }
        let left: Vec<UserId> = self.members.iter().copied().filter(free).collect();
        if left.is_empty() {
            None
        } else {
            Some(left[rng.random_range(0..left.len())])
        }
    }
}

impl SocialGraph {
    /// Generates the graph described by `spec`, deterministically for its seed.
    pub fn generate(spec: &GraphSpec) -> SocialGraph {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let n = spec.users;
        let size = spec.community_size.max(1);
        let p_intra = if spec.intra_community >= 0.0 {
            spec.intra_community.min(1.0)
        } else {
            0.0 // negative or NaN
        };

        // Zipf(1) cumulative weights over ranks; a prefix serves any smaller set.
        let mut zipf_cdf = Vec::with_capacity(n as usize);
        let mut acc = 0.0;
        for k in 0..n {
            acc += 1.0 / (k as f64 + 1.0);
            zipf_cdf.push(acc);
        }

        // Random popularity rankings: one over everybody, one per community.
        let mut global: Vec<UserId> = (0..n).collect();
        global.shuffle(&mut rng);
        let mut communities: Vec<Vec<UserId>> = Vec::new();
        let mut start = 0;
        while start < n {
            let end = start.saturating_add(size).min(n);
            let mut members: Vec<UserId> = (start..end).collect();
            members.shuffle(&mut rng);
            communities.push(members);
            start = end;
        }

        let half = spec.avg_follows / 2;
        let (lo, hi) = (spec.avg_follows - half, spec.avg_follows + half);
        let max_out = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
        let everybody = Ranked { members: &global };
        let mut follows = Vec::new();
        for me in 0..n {
            let want = rng.random_range(lo..=hi).min(max_out);
            let own = Ranked {
                members: &communities[community_of(me, size) as usize],
            };
            let mut taken = BTreeSet::new();
            while taken.len() < want {
                let pick = if rng.random_bool(p_intra) {
                    own.draw(&mut rng, &zipf_cdf, me, &taken)
                        .or_else(|| everybody.draw(&mut rng, &zipf_cdf, me, &taken))
                } else {
                    everybody.draw(&mut rng, &zipf_cdf, me, &taken)
                };
                match pick {
                    Some(u) => {
                        taken.insert(u);
                    }
                    None => break,
                }
            }
            follows.extend(taken.into_iter().map(|u| (me, u)));
        }

        SocialGraph {
            users: n,
            community_size: spec.community_size,
            follows,
        }
    }

    /// The community of user `u` (as [`super::Chirper::place`] computes it).
    pub fn community(&self, u: UserId) -> u64 {
        community_of(u, self.community_size)
    }

    /// The users `u` follows, ascending (a binary search in [`SocialGraph::follows`]).
    pub fn following_of(&self, u: UserId) -> impl Iterator<Item = UserId> + '_ {
        let start = self.follows.partition_point(|&(f, _)| f < u);
        self.follows[start..]
            .iter()
            .take_while(move |&&(f, _)| f == u)
            .map(|&(_, followee)| followee)
    }

    /// The followers of `u`, ascending. Scans every edge; use
    /// [`SocialGraph::followers_index`] for many users.
    pub fn followers_of(&self, u: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.follows
            .iter()
            .filter(move |&&(_, followee)| followee == u)
            .map(|&(follower, _)| follower)
    }

    /// The followers of every user (indexed by user id), each list ascending.
    pub fn followers_index(&self) -> Vec<Vec<UserId>> {
        let mut index = vec![Vec::new(); self.users as usize];
        for &(follower, followee) in &self.follows {
            if let Some(list) = index.get_mut(followee as usize) {
                list.push(follower);
            }
        }
        index
    }

    /// The fraction of edges whose two ends share a community (0 for an empty graph).
    pub fn intra_fraction(&self) -> f64 {
        if self.follows.is_empty() {
            return 0.0;
        }
        let intra = self
            .follows
            .iter()
            .filter(|&&(a, b)| self.community(a) == self.community(b))
            .count();
        intra as f64 / self.follows.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::chirper::{user_var, Chirper};
    use crate::app::state_machine::StateMachine;
    use crate::ids::GroupId;
    use std::collections::HashSet;

    fn spec(seed: u64) -> GraphSpec {
        GraphSpec {
            users: 2_000,
            community_size: 100,
            avg_follows: 10,
            intra_community: 0.9,
            seed,
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = SocialGraph::generate(&spec(7));
        assert_eq!(a, SocialGraph::generate(&spec(7)));
        assert_ne!(a.follows, SocialGraph::generate(&spec(8)).follows);
    }

    #[test]
    fn no_self_follows_or_duplicates_and_sorted() {
        let g = SocialGraph::generate(&spec(1));
        assert!(g
            .follows
            .iter()
            .all(|&(a, b)| a != b && a < g.users && b < g.users));
        let distinct: HashSet<_> = g.follows.iter().collect();
        assert_eq!(distinct.len(), g.follows.len());
        assert!(g.follows.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn out_degree_is_about_avg() {
        let g = SocialGraph::generate(&spec(2));
        let mean = g.follows.len() as f64 / g.users as f64;
        assert!((mean - 10.0).abs() < 0.5, "mean out-degree {mean}");
        for u in [0, 999, 1_999] {
            let d = g.following_of(u).count();
            assert!((5..=15).contains(&d), "user {u} follows {d}");
        }
    }

    #[test]
    fn intra_fraction_matches_spec() {
        // "Anywhere" draws also land in the own community now and then (about 1 in 20 here).
        for p in [0.9, 0.5] {
            let g = SocialGraph::generate(&GraphSpec {
                intra_community: p,
                ..spec(3)
            });
            let f = g.intra_fraction();
            assert!(f >= p - 0.03 && f <= p + 0.08, "p {p}: fraction {f}");
        }
    }

    #[test]
    fn follower_counts_are_skewed() {
        let g = SocialGraph::generate(&spec(4));
        let mut indeg: Vec<usize> = g.followers_index().iter().map(Vec::len).collect();
        indeg.sort_unstable();
        let median = indeg[indeg.len() / 2];
        let max = indeg[indeg.len() - 1];
        assert!(max >= 10 * median.max(1), "max {max}, median {median}");
    }

    #[test]
    fn follower_queries_agree() {
        let g = SocialGraph::generate(&spec(5));
        let index = g.followers_index();
        for u in [0, 17, 1_000, 1_999] {
            let scanned: Vec<UserId> = g.followers_of(u).collect();
            assert_eq!(scanned, index[u as usize]);
            for f in &scanned {
                assert!(g.following_of(*f).any(|x| x == u));
            }
        }
        assert_eq!(index.iter().map(Vec::len).sum::<usize>(), g.follows.len());
    }

    #[test]
    fn communities_match_chirper_placement() {
        let g = SocialGraph::generate(&spec(6));
        let chirper = Chirper::new(g.community_size);
        let parts: Vec<GroupId> = (1..=4).map(GroupId).collect();
        for u in [0, 99, 100, 555, 1_999] {
            let expected = parts[(g.community(u) % 4) as usize];
            assert_eq!(chirper.place(&user_var(u), &parts), expected);
        }
        assert_eq!(g.community(99), 0);
        assert_eq!(g.community(100), 1);
    }

    #[test]
    fn small_and_degenerate_specs() {
        let empty = SocialGraph::generate(&GraphSpec {
            users: 0,
            ..spec(0)
        });
        assert!(empty.follows.is_empty());
        assert_eq!(empty.intra_fraction(), 0.0);

        let one = SocialGraph::generate(&GraphSpec {
            users: 1,
            ..spec(0)
        });
        assert!(one.follows.is_empty());

        // Fewer users than the requested degree: everybody follows everybody else.
        let tiny = SocialGraph::generate(&GraphSpec {
            users: 4,
            community_size: 0,
            avg_follows: 50,
            intra_community: f64::NAN,
            seed: 9,
        });
        assert_eq!(tiny.follows.len(), 12);

        // Singleton communities: intra draws fall back to everybody.
        let singles = SocialGraph::generate(&GraphSpec {
            users: 50,
            community_size: 1,
            avg_follows: 4,
            intra_community: 1.0,
            seed: 9,
        });
        assert!((0..50).all(|u| singles.following_of(u).count() >= 2));
        assert_eq!(singles.intra_fraction(), 0.0);
    }
}
