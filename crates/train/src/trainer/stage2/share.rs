//! Channel B's generation across the ranks of a multi-process run.
//!
//! Every rank needs every rollout of a step: the clean-prefix segments of all the step's
//! samples are packed together (the packing plan depends on every segment's length) and each
//! rank then trains its share of the packs. So each request is generated on one rank, its
//! owner, and the answers are gathered to every rank. The embedded engine spreads the samples
//! round-robin over the ranks (their weights are identical); an HTTP backend is called by rank
//! 0 alone, which splits the requests over the servers exactly as one process does.
//!
//! Seeds are per request, so the rank that generated an answer does not choose it — up to the
//! float rounding of which rows shared a batch (on GPUs, a kernel chosen by batch size could
//! flip a near tie).
//!
//! The backends' own counters (HTTP calls, retries, …) are summed over the ranks; a backend
//! that fails as a whole on one rank — or rank 0's weight sync before it — stops every rank
//! with its reason instead of leaving them to time out.

use coordexp_core::{Error, Result};
use coordexp_dist::Group;
use coordexp_model::generate::StopReason;
use coordexp_rollout::backend::{Rollout, RolloutBackend, RolloutRequest};
use serde::{Deserialize, Serialize};

/// Which rank generates which request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generators {
    /// Sample `k` of the step (every view of it) on rank `k mod world`: the embedded engine.
    EveryRank,
    /// Every request on rank 0: servers, which rank 0 keeps in sync.
    Lead,
}

impl Generators {
    /// The rank that generates the views of the step's sample `k`.
    pub fn owner(self, k: usize, world: usize) -> usize {
        match self {
            Generators::EveryRank => k % world.max(1),
            Generators::Lead => 0,
        }
    }
}

/// One request's answer, as every rank sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Rollouts(Vec<Rollout>),
    /// The request failed for good; the kind names its fallback counter.
    Failed(String),
}

/// The replies of a step's requests, in request order, and the increase of the backend's
/// counters summed over the ranks.
pub struct Generated {
    pub replies: Vec<Reply>,
    pub counters: Vec<(&'static str, f64)>,
}

/// Where a channel-B step's rollouts come from: the backend, and in a multi-process run which
/// rank calls it for which request.
pub struct Generation<'a> {
    pub backend: &'a mut dyn RolloutBackend,
    pub generators: Generators,
    pub dist: Option<&'a Group>,
    /// Why this rank cannot generate this step (rank 0's weight sync failed): every rank stops
    /// with it at the gather.
    pub failed: Option<Error>,
}

impl Generation<'_> {
    /// The answers of view-major `requests` (request `r` is a view of the step's sample
    /// `r mod samples`) on every rank, and the increase of the backend's counters summed over
    /// the ranks.
    pub fn generate(
        &mut self,
        requests: &[RolloutRequest<'_>],
        samples: usize,
        step: u64,
    ) -> Result<Generated> {
        let world = self.dist.map_or(1, Group::world);
        let owners: Vec<usize> =
            (0..requests.len()).map(|r| self.generators.owner(r % samples.max(1), world)).collect();
        let failed = self.failed.take();
        generate(self.backend, requests, &owners, self.dist, step, failed)
    }
}

/// The answers of `requests` (whose owners are `owners[i]`) on every rank, and the increase of
/// the backend's counters summed over the ranks. A rank that `failed` before generating (or
/// whose backend fails) sends its reason instead, and every rank stops with it.
fn generate(
    backend: &mut dyn RolloutBackend,
    requests: &[RolloutRequest<'_>],
    owners: &[usize],
    dist: Option<&Group>,
    step: u64,
    failed: Option<Error>,
) -> Result<Generated> {
    let rank = dist.map_or(0, Group::rank);
    let mine: Vec<usize> = (0..requests.len()).filter(|&i| owners[i] == rank).collect();
    let before = backend.counters();
    let local = match failed {
        Some(e) => Err(e),
        None => generate_mine(backend, requests, &mine),
    };
    let mut counters: Vec<(&'static str, f64)> = backend
        .counters()
        .into_iter()
        .zip(before)
        .map(|((name, now), (_, then))| (name, now.saturating_sub(then) as f64))
        .collect();
    let Some(g) = dist else {
        let replies = local?.into_iter().map(|(_, a)| a).collect();
        return Ok(Generated { replies, counters });
    };
    let (share, own_failure) = match local {
        Ok(answers) => {
            let answers = answers.into_iter().map(|(i, a)| (i, WireReply::from(a))).collect();
            (Share { answers, fatal: None }, None)
        }
        Err(e) => (Share { answers: Vec::new(), fatal: Some(e.to_string()) }, Some(e)),
    };
    let bytes = serde_json::to_vec(&share)
        .map_err(|e| Error::runtime(format!("encoding this rank's rollouts: {e}")))?;
    let gathered = g.all_gather_bytes(&bytes, &format!("rollouts, step {step}"))?;
    if let Some(e) = own_failure {
        // The others stop with its text; this rank keeps the error itself (and its hint).
        return Err(e);
    }
    let mut slots: Vec<Option<Reply>> = vec![None; requests.len()];
    for (from, bytes) in gathered.iter().enumerate() {
        let share: Share = serde_json::from_slice(bytes).map_err(|e| {
            Error::runtime(format!("reading the rollouts of rank {from} at step {step}: {e}"))
        })?;
        if let Some(why) = share.fatal {
            return Err(Error::runtime(format!(
                "rank {from}'s rollout backend failed at step {step}: {why}"
            )));
        }
        for (i, answer) in share.answers {
            match slots.get_mut(i) {
                Some(slot @ None) if owners[i] == from => *slot = Some(answer.into()),
                _ => {
                    return Err(Error::runtime(format!(
                        "rank {from} answered request {i} of step {step}, which is not its own"
                    )));
                }
            }
        }
    }
    let answers = slots
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.ok_or_else(|| {
                Error::runtime(format!(
                    "no rank answered request {i} of step {step} (owner rank {})",
                    owners[i]
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sums: Vec<f64> = counters.iter().map(|c| c.1).collect();
    g.sum_f64(&mut sums, &format!("rollout backend counters, step {step}"))?;
    for (c, s) in counters.iter_mut().zip(sums) {
        c.1 = s;
    }
    Ok(Generated { replies: answers, counters })
}

/// This rank's requests (`mine`, indices into `requests`) through the backend.
fn generate_mine(
    backend: &mut dyn RolloutBackend,
    requests: &[RolloutRequest<'_>],
    mine: &[usize],
) -> Result<Vec<(usize, Reply)>> {
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    let own: Vec<RolloutRequest<'_>> = mine.iter().map(|&i| requests[i].clone()).collect();
    let results = backend.generate(&own)?;
    if results.len() != own.len() {
        return Err(Error::runtime(format!(
            "the {} rollout backend answered {} requests with {} results",
            backend.name(),
            own.len(),
            results.len()
        )));
    }
    Ok(mine
        .iter()
        .zip(results)
        .map(|(&i, r)| {
            let answer = match r {
                Ok(v) => Reply::Rollouts(v),
                Err(e) => {
                    tracing::warn!(
                        "rollout request failed, training it as an invalid rollout: {e}"
                    );
                    Reply::Failed(e.kind().to_string())
                }
            };
            (i, answer)
        })
        .collect())
}

/// What one rank sends: its answers by request index, or why its backend failed as a whole.
#[derive(Serialize, Deserialize)]
struct Share {
    answers: Vec<(usize, WireReply)>,
    fatal: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum WireReply {
    Rollouts(Vec<WireRollout>),
    Failed(String),
}

/// A rollout on the wire; log-probs as their bits, so that every value (−∞ included) crosses
/// exactly.
#[derive(Serialize, Deserialize)]
struct WireRollout {
    tokens: Vec<i64>,
    logprob_bits: Vec<u32>,
    stop_token: bool,
    prompt_ids: Vec<i64>,
    weight_version: u64,
}

impl From<Reply> for WireReply {
    fn from(a: Reply) -> WireReply {
        match a {
            Reply::Failed(kind) => WireReply::Failed(kind),
            Reply::Rollouts(v) => WireReply::Rollouts(
                v.into_iter()
                    .map(|r| WireRollout {
                        tokens: r.tokens,
                        logprob_bits: r.logprobs.iter().map(|p| p.to_bits()).collect(),
                        stop_token: r.stop == StopReason::StopToken,
                        prompt_ids: r.prompt_ids,
                        weight_version: r.weight_version,
                    })
                    .collect(),
            ),
        }
    }
}

impl From<WireReply> for Reply {
    fn from(a: WireReply) -> Reply {
        match a {
            WireReply::Failed(kind) => Reply::Failed(kind),
            WireReply::Rollouts(v) => Reply::Rollouts(
                v.into_iter()
                    .map(|r| Rollout {
                        tokens: r.tokens,
                        logprobs: r.logprob_bits.into_iter().map(f32::from_bits).collect(),
                        stop: if r.stop_token {
                            StopReason::StopToken
                        } else {
                            StopReason::MaxNewTokens
                        },
                        prompt_ids: r.prompt_ids,
                        weight_version: r.weight_version,
                    })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordexp_rollout::backend::BackendError;
    use std::time::{Duration, Instant};

    #[test]
    fn an_answer_crosses_the_wire_unchanged_including_infinite_logprobs() {
        let rollout = Rollout {
            tokens: vec![3, 1, 4],
            logprobs: vec![-0.25, f32::NEG_INFINITY, -1e-30],
            stop: StopReason::StopToken,
            prompt_ids: vec![9, 9],
            weight_version: 7,
        };
        for a in [
            Reply::Rollouts(vec![
                rollout.clone(),
                Rollout { stop: StopReason::MaxNewTokens, ..rollout },
            ]),
            Reply::Failed("timeout".into()),
        ] {
            let bytes = serde_json::to_vec(&WireReply::from(a.clone())).unwrap();
            let back: WireReply = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(Reply::from(back), a);
        }
    }

    /// A backend that must not be called (every request belongs to rank 0).
    struct Unused;

    impl RolloutBackend for Unused {
        fn name(&self) -> &'static str {
            "unused"
        }
        fn generate(
            &mut self,
            _: &[RolloutRequest<'_>],
        ) -> std::result::Result<Vec<coordexp_rollout::backend::RequestResult>, BackendError>
        {
            Err(BackendError::Protocol("called".into()))
        }
    }

    #[test]
    fn a_failed_weight_sync_on_rank_zero_stops_every_rank_with_its_reason() {
        use coordexp_dist::{Backend, Launch};
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let launch = Launch {
                        rank,
                        world: 2,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        agent_store: false,
                        prefix: "coordexp/share-test/0/".into(),
                        interface: None,
                    };
                    let g =
                        Group::connect(&launch, Duration::from_secs(20), Backend::Gloo).unwrap();
                    let mut backend = Unused;
                    let mut generation = Generation {
                        backend: &mut backend,
                        generators: Generators::Lead,
                        dist: Some(&g),
                        failed: (rank == 0)
                            .then(|| Error::runtime("the servers refused the weights")),
                    };
                    let started = Instant::now();
                    let e = generation.generate(&[], 0, 3).err().map(|e| e.to_string());
                    (e, started.elapsed())
                })
            })
            .collect();
        for r in ranks {
            let (e, took) = r.join().unwrap();
            let e = e.expect("every rank stops");
            assert!(e.contains("the servers refused the weights"), "{e}");
            assert!(took < Duration::from_secs(10), "{took:?}: a timeout, not the reason");
        }
    }

    #[test]
    fn the_embedded_engine_spreads_samples_and_servers_are_called_by_rank_zero() {
        let spread: Vec<usize> = (0..5).map(|k| Generators::EveryRank.owner(k, 2)).collect();
        assert_eq!(spread, vec![0, 1, 0, 1, 0]);
        assert!((0..5).all(|k| Generators::Lead.owner(k, 2) == 0));
        assert!((0..5).all(|k| Generators::EveryRank.owner(k, 1) == 0));
    }
}
