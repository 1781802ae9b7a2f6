//! Who votes for what, in which order: voter ids, re-votes, option choices, and what each
//! voter's last answered vote was.
//!
//! The [`Planner`] hands out one [`Ticket`] per vote and never gives a voter a second ticket
//! while the first is in flight. So a voter's votes reach the server one after the other, and
//! the last vote the server accepted is the one PostgreSQL must end up holding.

use domain::voter::VoterId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::Mix;

/// A voter's id: 32 lowercase hex characters (128 bits), derived from the run's seed and the
/// voter's number. Distinct numbers give distinct ids (the low half is a bijection of the
/// number), and ids look random, as the vote service's own are.
pub fn voter_id(seed: u64, index: u32) -> VoterId {
    let lo = splitmix64(seed ^ 0x6a09_e667_f3bc_c908).wrapping_add(u64::from(index));
    let lo = splitmix64(lo);
    let hi = splitmix64(lo ^ splitmix64(seed));
    VoterId::from_bits(u128::from(hi) << 64 | u128::from(lo))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One vote to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// 0, 1, 2, ... in the order tickets were handed out (the schedule slot at a fixed rate).
    pub seq: u64,
    pub voter: u32,
    pub option: u8,
    pub revote: bool,
}

/// What [`Planner::next_ticket`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Go(Ticket),
    /// Every voter who may vote now has a vote in flight: wait for one to finish.
    Wait,
    /// The last vote has been handed out.
    Done,
}

/// How a vote ended, as far as the voter's last vote is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server queued it (202, or 303 for a form).
    Accepted,
    /// The server answered, and said it did not queue it.
    Refused,
    /// No answer (timeout, broken connection after sending): it may or may not be queued.
    Unknown,
}

/// What the run knows about one voter once the sending is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// PostgreSQL must hold this option for the voter.
    Vote(u8),
    /// Every vote was refused: the voter must be absent.
    Absent,
    /// A vote got no answer: any outcome is possible.
    Unknown,
}

// Per-voter state, one byte: the last accepted option + 1 (0 = none) and a flag for a vote
// whose outcome is unknown.
const OPTION_BITS: u8 = 0x1f;
const UNKNOWN: u8 = 0x20;

/// Hands out tickets; remembers each voter's last accepted vote.
pub struct Planner {
    seed: u64,
    rng: StdRng,
    mix: Mix,
    votes: Option<u64>,
    max_voters: u64,
    revote_ratio: f64,
    issued: u64,
    revotes: u64,
    /// One byte per voter who got a ticket, in voter order.
    state: Vec<u8>,
    /// Voters who have voted and have nothing in flight: the candidates for a re-vote.
    idle: Vec<u32>,
    /// Whether re-votes can happen at all (else `idle` is not kept).
    track_idle: bool,
}

impl Planner {
    /// `votes`: the most tickets (none: until the caller stops asking); `voters`: the most
    /// distinct voters (none: one per vote).
    pub fn new(
        seed: u64,
        mix: Mix,
        votes: Option<u64>,
        voters: Option<u64>,
        revote_ratio: f64,
    ) -> Planner {
        let cap = u64::from(u32::MAX);
        let max_voters = voters.or(votes).unwrap_or(cap).min(cap);
        let track_idle = revote_ratio > 0.0 || votes.is_none_or(|v| max_voters < v);
        Planner {
            seed,
            rng: StdRng::seed_from_u64(seed),
            mix,
            votes,
            max_voters,
            revote_ratio,
            issued: 0,
            revotes: 0,
            state: Vec::new(),
            idle: Vec::new(),
            track_idle,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next vote: a re-vote while fewer than `ratio` of the votes so far were re-votes and
    /// a voter who voted is free (so the fraction comes out exact), else a new voter, else (all
    /// voters used) any free voter.
    pub fn next_ticket(&mut self) -> Next {
        if self.votes.is_some_and(|v| self.issued >= v) {
            return Next::Done;
        }
        let seq = self.issued;
        // Re-votes due so far; one that found no free voter is made up later.
        let revote_due = self.revotes < ((seq + 1) as f64 * self.revote_ratio).floor() as u64;
        let fresh_left = (self.state.len() as u64) < self.max_voters;
        let (voter, revote) = if (revote_due || !fresh_left) && !self.idle.is_empty() {
            let i = self.rng.random_range(0..self.idle.len());
            (self.idle.swap_remove(i), true)
        } else if fresh_left {
            self.state.push(0);
            ((self.state.len() - 1) as u32, false)
        } else {
            return Next::Wait;
        };
        let option = self.mix.pick(self.rng.random::<f64>()) as u8;
        self.issued += 1;
        self.revotes += u64::from(revote);
        Next::Go(Ticket {
            seq,
            voter,
            option,
            revote,
        })
    }

    /// Records how `ticket` ended and frees its voter.
    pub fn finish(&mut self, ticket: Ticket, outcome: Outcome) {
        let state = &mut self.state[ticket.voter as usize];
        match outcome {
            Outcome::Accepted => *state = (*state & !OPTION_BITS) | (ticket.option + 1),
            Outcome::Refused => {}
            Outcome::Unknown => *state |= UNKNOWN,
        }
        if self.track_idle {
            self.idle.push(ticket.voter);
        }
    }

    /// Tickets handed out.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Of which re-votes.
    pub fn revotes(&self) -> u64 {
        self.revotes
    }

    /// Distinct voters who got a ticket.
    pub fn voters(&self) -> u64 {
        self.state.len() as u64
    }

    /// What PostgreSQL must hold for voter `index` (one who got a ticket).
    pub fn expect(&self, index: u32) -> Expect {
        let state = self.state[index as usize];
        if state & UNKNOWN != 0 {
            Expect::Unknown
        } else if state & OPTION_BITS == 0 {
            Expect::Absent
        } else {
            Expect::Vote((state & OPTION_BITS) - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::args::parse_mix;

    #[test]
    fn voter_ids_are_32_lowercase_hex_distinct_and_seeded() {
        let ids: HashSet<VoterId> = (0..100_000).map(|i| voter_id(42, i)).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids.iter().all(|id| id.as_str().len() == 32));
        assert_eq!(voter_id(42, 7), voter_id(42, 7));
        assert_ne!(voter_id(42, 7), voter_id(43, 7));
        assert_ne!(voter_id(0, 0), voter_id(0, 1));
    }

    /// Drives a planner with `in_flight` tickets outstanding, finishing the oldest first.
    fn drive(p: &mut Planner, in_flight: usize) -> Vec<Ticket> {
        let mut all = Vec::new();
        let mut flying: std::collections::VecDeque<Ticket> = Default::default();
        loop {
            match p.next_ticket() {
                Next::Go(t) => {
                    assert!(
                        flying.iter().all(|f| f.voter != t.voter),
                        "voter {} twice in flight",
                        t.voter
                    );
                    flying.push_back(t);
                    all.push(t);
                    if flying.len() >= in_flight {
                        p.finish(flying.pop_front().unwrap(), Outcome::Accepted);
                    }
                }
                Next::Wait => {
                    let t = flying
                        .pop_front()
                        .expect("waiting means something is in flight");
                    p.finish(t, Outcome::Accepted);
                }
                Next::Done => break,
            }
        }
        for t in flying {
            p.finish(t, Outcome::Accepted);
        }
        all
    }

    #[test]
    fn by_default_every_vote_is_a_new_voter() {
        let mut p = Planner::new(1, Mix::default(), Some(1000), None, 0.0);
        let all = drive(&mut p, 8);
        assert_eq!(all.len(), 1000);
        assert_eq!(p.voters(), 1000);
        assert_eq!(p.revotes(), 0);
        assert!(all.iter().enumerate().all(|(i, t)| t.seq == i as u64));
    }

    #[test]
    fn revote_ratio_is_exact_while_voters_last() {
        let mut p = Planner::new(1, Mix::default(), Some(1000), None, 0.25);
        drive(&mut p, 8);
        assert_eq!(p.revotes(), 250);
        assert_eq!(p.voters(), 750);
    }

    #[test]
    fn limited_voters_revote_once_all_have_voted_and_never_overlap() {
        let mut p = Planner::new(3, Mix::default(), Some(500), Some(20), 0.5);
        let all = drive(&mut p, 8);
        assert_eq!(all.len(), 500);
        assert_eq!(p.voters(), 20);
        assert_eq!(p.revotes(), 480);
        // Fewer voters than slots: the planner makes the caller wait instead of doubling up.
        let mut p = Planner::new(3, Mix::default(), Some(100), Some(3), 0.0);
        assert_eq!(drive(&mut p, 8).len(), 100);
        assert_eq!(p.voters(), 3);
    }

    #[test]
    fn the_last_accepted_vote_is_expected() {
        let mut p = Planner::new(5, Mix::default(), None, Some(2), 0.0);
        let Next::Go(a) = p.next_ticket() else {
            panic!()
        };
        let Next::Go(b) = p.next_ticket() else {
            panic!()
        };
        assert_eq!(p.next_ticket(), Next::Wait);
        p.finish(a, Outcome::Accepted);
        p.finish(b, Outcome::Refused);
        assert_eq!(p.expect(a.voter), Expect::Vote(a.option));
        assert_eq!(p.expect(b.voter), Expect::Absent);
        let Next::Go(c) = p.next_ticket() else {
            panic!()
        };
        p.finish(c, Outcome::Refused);
        assert_eq!(
            p.expect(a.voter),
            Expect::Vote(a.option),
            "a refusal keeps the last"
        );
        let Next::Go(d) = p.next_ticket() else {
            panic!()
        };
        p.finish(d, Outcome::Unknown);
        assert_eq!(p.expect(d.voter), Expect::Unknown);
    }

    #[test]
    fn the_mix_is_followed() {
        let mix = parse_mix("a=60,b=40").unwrap();
        let mut p = Planner::new(9, mix, Some(10_000), None, 0.0);
        let all = drive(&mut p, 1);
        let a = all.iter().filter(|t| t.option == 0).count();
        assert!((5_700..6_300).contains(&a), "{a} of 10000 for a=60");
    }
}
