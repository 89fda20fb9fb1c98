//! YCSB's core workloads, as the `server` suite runs them against any system: the record
//! shape, the key names, the zipfian key choice and the client loop that measures one run.
//!
//! Faithful to YCSB's `CoreWorkload` where it matters for the comparison:
//! - a record is a key `user<hash>` and 10 fields `field0..field9` of 100 random bytes
//!   (printable ASCII here, so that the same value is valid BSON and JSON);
//! - keys are chosen by a zipfian distribution over record ranks with constant 0.99 (YCSB's
//!   `ZipfianGenerator`, the rejection-free method of Gray et al., "Quickly generating
//!   billion-record synthetic databases", SIGMOD 1994); rank `r` names the key
//!   `user<fnv64(r)>`, so the hot records are scattered over the key space instead of sitting
//!   next to each other in a B-tree (YCSB's hashed key names, `insertorder=hashed`);
//! - an update writes one random field (YCSB's default `writeallfields=false`); a read returns
//!   the whole record;
//! - workload F's read-modify-write reads a record and then updates one of its fields, and is
//!   one operation whose latency covers both steps.
//!
//! Invariant: every operation must find its record; a read that finds nothing is an error, so
//! a run never reports operations that did not do their work.

use crate::report::Latencies;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// YCSB's fields per record.
pub const FIELD_COUNT: usize = 10;
/// YCSB's bytes per field.
pub const FIELD_BYTES: usize = 100;
/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The name of field `index` (`field0`..`field9`).
pub fn field_name(index: usize) -> String {
    assert!(index < FIELD_COUNT);
    format!("field{index}")
}

/// 64-bit FNV-1a of the little-endian bytes of `value` (YCSB's `Utils.fnvhash64`).
pub fn fnv64(value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// The key of the record of rank `rank`.
pub fn key(rank: u64) -> String {
    format!("user{}", fnv64(rank))
}

/// A field value: `FIELD_BYTES` random printable ASCII characters.
pub fn field_value(random: &mut impl Rng) -> String {
    (0..FIELD_BYTES)
        .map(|_| char::from(random.random_range(b' '..=b'~')))
        .collect()
}

/// The fields of a new record, in order.
pub fn record_fields(random: &mut impl Rng) -> Vec<(String, String)> {
    (0..FIELD_COUNT)
        .map(|index| (field_name(index), field_value(random)))
        .collect()
}

/// Zipfian ranks in `0..items`: rank 0 is the most popular, and rank `r` is drawn with
/// probability proportional to `1 / (r + 1)^theta`.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_items: f64,
    eta: f64,
    /// `1 + 0.5^theta`: below it (times zeta), the draw is rank 1.
    second_threshold: f64,
}

/// `sum over i in 1..=items of 1 / i^theta`.
pub fn zeta(items: u64, theta: f64) -> f64 {
    (1..=items).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// Precomputes the constants (O(items), once per run).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!(
            items >= 2,
            "a zipfian distribution needs at least two items"
        );
        assert!(theta > 0.0 && theta < 1.0, "the method needs 0 < theta < 1");
        let zeta_items = zeta(items, theta);
        let zeta_two = zeta(2, theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_two / zeta_items);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_items,
            eta,
            second_threshold: 1.0 + 0.5f64.powf(theta),
        }
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// The exact probability of `rank`.
    #[cfg(test)]
    pub fn probability(&self, rank: u64) -> f64 {
        assert!(rank < self.items);
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zeta_items
    }

    /// The rank for a uniform draw `uniform` in `[0, 1)`.
    pub fn rank(&self, uniform: f64) -> u64 {
        assert!((0.0..1.0).contains(&uniform));
        let scaled = uniform * self.zeta_items;
        if scaled < 1.0 {
            return 0;
        }
        if scaled < self.second_threshold {
            return 1;
        }
        let rank =
            (self.items as f64 * (self.eta * uniform - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }

    pub fn sample(&self, random: &mut impl Rng) -> u64 {
        self.rank(random.random::<f64>())
    }
}

/// One operation of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Update,
    ReadModifyWrite,
}

/// A YCSB core workload: the proportions of its operations (they add up to 1).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The `workload` field of the records (`ycsb_a`, ...).
    pub name: &'static str,
    pub read: f64,
    pub update: f64,
    pub read_modify_write: f64,
}

impl Workload {
    /// Whether the workload writes (C does not, so its durability setting does not matter).
    pub fn writes(&self) -> bool {
        self.update > 0.0 || self.read_modify_write > 0.0
    }

    pub fn choose(&self, random: &mut impl Rng) -> Operation {
        let draw = random.random::<f64>();
        if draw < self.read {
            Operation::Read
        } else if draw < self.read + self.update {
            Operation::Update
        } else {
            Operation::ReadModifyWrite
        }
    }
}

/// YCSB's workloads A (update heavy), B (read mostly), C (read only) and F (read-modify-write).
pub const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "ycsb_a",
        read: 0.5,
        update: 0.5,
        read_modify_write: 0.0,
    },
    Workload {
        name: "ycsb_b",
        read: 0.95,
        update: 0.05,
        read_modify_write: 0.0,
    },
    Workload {
        name: "ycsb_c",
        read: 1.0,
        update: 0.0,
        read_modify_write: 0.0,
    },
    Workload {
        name: "ycsb_f",
        read: 0.5,
        update: 0.0,
        read_modify_write: 0.5,
    },
];

/// One client thread's connection to a system under test.
pub trait Session: Send + 'static {
    /// Reads the whole record; an error when it is missing.
    fn read(&mut self, key: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Sets one field of an existing record; an error when it is missing.
    fn update(
        &mut self,
        key: &str,
        field: usize,
        value: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The cheapest request the system answers (`{ping: 1}`, `SELECT 1`), for the round trips.
    fn ping(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What one measurement runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workload: Workload,
    pub zipfian: Arc<Zipfian>,
    /// Operations before this are not counted (connections and caches warm up).
    pub warmup: Duration,
    pub measure: Duration,
    pub seed: u64,
}

/// The result of one measurement: the operations that started inside the measured window,
/// and the time from its start to the end of the last of them.
pub struct Measurement {
    pub ops: u64,
    pub seconds: f64,
    pub latencies: Latencies,
}

struct TaskResult<S> {
    session: S,
    ops: u64,
    last_end: Option<Instant>,
    latencies: Latencies,
}

/// Runs `plan` with one tokio task per session (on the current runtime) and hands the sessions
/// back for the next measurement.
pub async fn drive<S: Session>(
    sessions: Vec<S>,
    plan: &Plan,
) -> anyhow::Result<(Measurement, Vec<S>)> {
    assert!(!sessions.is_empty());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let measure_until = measure_from + plan.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, session) in sessions.into_iter().enumerate() {
        let plan = plan.clone();
        let seed = plan.seed ^ fnv64(index as u64);
        tasks.spawn(client_task(
            session,
            plan,
            seed,
            measure_from,
            measure_until,
        ));
    }
    let mut sessions = Vec::new();
    let mut ops = 0;
    let mut last_end = measure_from;
    let mut latencies = Latencies::new();
    while let Some(joined) = tasks.join_next().await {
        let result = joined??;
        ops += result.ops;
        if let Some(end) = result.last_end {
            last_end = last_end.max(end);
        }
        latencies.merge(&result.latencies);
        sessions.push(result.session);
    }
    assert_eq!(latencies.count(), ops, "one latency per counted operation");
    let seconds = last_end.duration_since(measure_from).as_secs_f64();
    Ok((
        Measurement {
            ops,
            seconds,
            latencies,
        },
        sessions,
    ))
}

async fn client_task<S: Session>(
    mut session: S,
    plan: Plan,
    seed: u64,
    measure_from: Instant,
    measure_until: Instant,
) -> anyhow::Result<TaskResult<S>> {
    let mut random = SmallRng::seed_from_u64(seed);
    let mut ops = 0;
    let mut last_end = None;
    let mut latencies = Latencies::new();
    loop {
        let operation = plan.workload.choose(&mut random);
        let key = key(plan.zipfian.sample(&mut random));
        let field = random.random_range(0..FIELD_COUNT);
        let value = match operation {
            Operation::Read => String::new(),
            Operation::Update | Operation::ReadModifyWrite => field_value(&mut random),
        };
        let began = Instant::now();
        if began >= measure_until {
            break;
        }
        match operation {
            Operation::Read => session.read(&key).await?,
            Operation::Update => session.update(&key, field, &value).await?,
            Operation::ReadModifyWrite => {
                session.read(&key).await?;
                session.update(&key, field, &value).await?;
            }
        }
        let ended = Instant::now();
        if began >= measure_from {
            ops += 1;
            latencies.record(ended - began);
            last_end = Some(ended);
        }
    }
    Ok(TaskResult {
        session,
        ops,
        last_end,
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(zipfian: &Zipfian, draws: usize, seed: u64) -> Vec<u64> {
        let mut random = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u64; zipfian.items() as usize];
        for _ in 0..draws {
            counts[zipfian.sample(&mut random) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zeta_matches_a_hand_computed_sum() {
        let expected = 1.0 + 1.0 / 2f64.powf(0.99) + 1.0 / 3f64.powf(0.99);
        assert!((zeta(3, 0.99) - expected).abs() < 1e-12);
    }

    #[test]
    fn ranks_stay_in_range_even_at_the_edges() {
        let zipfian = Zipfian::new(1_000, ZIPFIAN_CONSTANT);
        assert_eq!(zipfian.rank(0.0), 0);
        assert!(zipfian.rank(0.999_999_999) < 1_000);
        let counts = histogram(&zipfian, 100_000, 1);
        assert_eq!(counts.iter().sum::<u64>(), 100_000);
    }

    #[test]
    fn the_two_most_popular_ranks_have_their_exact_probability() {
        // Gray's method is exact for ranks 0 and 1 and approximates the tail.
        let zipfian = Zipfian::new(1_000, ZIPFIAN_CONSTANT);
        let draws = 400_000;
        let counts = histogram(&zipfian, draws, 7);
        for rank in [0, 1] {
            let observed = counts[rank] as f64 / draws as f64;
            let expected = zipfian.probability(rank as u64);
            let relative = (observed - expected).abs() / expected;
            assert!(relative < 0.03, "rank {rank}: {observed} vs {expected}");
        }
    }

    #[test]
    fn the_head_and_the_tail_carry_roughly_their_share() {
        let items = 10_000;
        let zipfian = Zipfian::new(items, ZIPFIAN_CONSTANT);
        let draws = 400_000;
        let counts = histogram(&zipfian, draws, 11);
        for head in [10, 100, 1_000] {
            let observed = counts[..head].iter().sum::<u64>() as f64 / draws as f64;
            let expected = zeta(head as u64, ZIPFIAN_CONSTANT) / zeta(items, ZIPFIAN_CONSTANT);
            assert!(
                (observed - expected).abs() < 0.03,
                "top {head}: {observed} vs {expected}"
            );
        }
        // Skewed, yet every part of the key space is reached.
        assert!(counts[0] > counts[10] && counts[10] > counts[1_000]);
        let reached_tail = counts[items as usize / 2..]
            .iter()
            .filter(|&&count| count > 0)
            .count();
        assert!(
            reached_tail > 1_000,
            "only {reached_tail} of the upper half reached"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_keys() {
        let zipfian = Zipfian::new(5_000, ZIPFIAN_CONSTANT);
        assert_eq!(histogram(&zipfian, 1_000, 3), histogram(&zipfian, 1_000, 3));
    }

    #[test]
    fn hot_keys_are_scattered_and_distinct() {
        let keys: Vec<String> = (0..1_000).map(key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "no two ranks share a key");
        // Ranks 0 and 1 are not neighbours in key order.
        let position = |key: &String| sorted.binary_search(key).expect("present");
        assert!(position(&keys[0]).abs_diff(position(&keys[1])) > 1);
    }

    #[test]
    fn workload_mixes_follow_their_proportions() {
        let mut random = SmallRng::seed_from_u64(5);
        for workload in WORKLOADS {
            let draws = 100_000;
            let mut reads = 0;
            let mut updates = 0;
            let mut read_modify_writes = 0;
            for _ in 0..draws {
                match workload.choose(&mut random) {
                    Operation::Read => reads += 1,
                    Operation::Update => updates += 1,
                    Operation::ReadModifyWrite => read_modify_writes += 1,
                }
            }
            let share = |count: i32| f64::from(count) / f64::from(draws);
            assert!(
                (share(reads) - workload.read).abs() < 0.01,
                "{}",
                workload.name
            );
            assert!(
                (share(updates) - workload.update).abs() < 0.01,
                "{}",
                workload.name
            );
            assert!(
                (share(read_modify_writes) - workload.read_modify_write).abs() < 0.01,
                "{}",
                workload.name
            );
        }
        assert!(!WORKLOADS[2].writes() && WORKLOADS[0].writes() && WORKLOADS[3].writes());
    }

    #[test]
    fn records_have_ycsb_shape() {
        let mut random = SmallRng::seed_from_u64(9);
        let fields = record_fields(&mut random);
        assert_eq!(fields.len(), FIELD_COUNT);
        for (index, (name, value)) in fields.iter().enumerate() {
            assert_eq!(name, &format!("field{index}"));
            assert_eq!(value.len(), FIELD_BYTES);
            assert!(value.bytes().all(|byte| (b' '..=b'~').contains(&byte)));
        }
    }
}
