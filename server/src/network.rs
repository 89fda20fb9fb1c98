//! Network threads: each connection lives on one thread for its whole life.
//!
//! A connection's task (HTTP/2 or the wire protocol, with the inline commands it runs) is placed
//! on one of a few network threads, each running a single-threaded tokio runtime, and stays
//! there. Why not one work-stealing runtime: a connection's task wakes itself while it runs
//! (h2 notifies the connection when a reply is queued), and a work-stealing runtime answers a
//! self-wake by queueing the task at the back and waking another worker to steal it. On two
//! cores that was about one extra thread switch per request, and the task moved between
//! threads, cache and all. On a thread of its own, a self-wake just polls the task again.
//!
//! Commands that may block still leave the network thread (`spawn_blocking`, on the thread's
//! runtime's blocking pool), so a blocked operation never stalls the other connections of its
//! thread.
//!
//! A new connection goes to the least loaded thread: the share of its recent time the thread
//! spent on the CPU, plus [`CONNECTION_LOAD_PERMILLE`] for each connection it has. Counting
//! connections alone put a client's two busy connections on one thread beside an idle one:
//! idle connections (a driver's monitoring connection) counted as much as busy ones. It is a
//! guess made once, when the connection opens: connections that open together, before any of
//! them is busy, can still end up together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a network thread measures its own CPU time.
const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// What an open connection adds to its thread's load (CPU time per wall time, in thousandths)
/// when placing a new one, so that among idle threads the one with fewer connections wins.
const CONNECTION_LOAD_PERMILLE: u32 = 20;

/// Network threads when the configuration leaves it to the machine: one per core.
pub fn default_thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

struct NetworkThread {
    runtime: tokio::runtime::Handle,
    /// Open connections placed on this thread.
    connections: Arc<AtomicUsize>,
    /// The thread's CPU time over its last sample interval, in thousandths of the interval.
    load_permille: Arc<AtomicU32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The node's network threads.
pub struct NetworkThreads {
    threads: Vec<NetworkThread>,
}

/// A connection's place on a network thread: held by the connection's task, it counts the
/// connection there until dropped.
pub struct Placement {
    connections: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        let before = self.connections.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "a placement is released once");
    }
}

impl NetworkThreads {
    /// Starts `count` threads (at least one).
    pub fn start(count: usize) -> std::io::Result<NetworkThreads> {
        NetworkThreads::start_sampling(count, LOAD_SAMPLE_INTERVAL)
    }

    /// [`NetworkThreads::start`], with the threads measuring their load every `sample_interval`.
    fn start_sampling(count: usize, sample_interval: Duration) -> std::io::Result<NetworkThreads> {
        let mut threads = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The runtime's blocking pool: the commands that may wait.
                .thread_name(format!("cairnd-work-{index}"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let load_permille = Arc::new(AtomicU32::new(0));
            let load = load_permille.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cairnd-net-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        tokio::select! {
                            _ = stopped => {}
                            _ = measure_load(&load, sample_interval) => {}
                        }
                    });
                    // Dropped here, on its own thread, outside any runtime: waits for the
                    // blocking commands its connections started.
                    drop(runtime);
                })?;
            threads.push(NetworkThread {
                runtime: handle,
                connections: Arc::new(AtomicUsize::new(0)),
                load_permille,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(NetworkThreads { threads })
    }

    /// The thread a new connection goes to (the least loaded: see the module's comment), and
    /// the connection's placement there.
    pub fn place(&self) -> (tokio::runtime::Handle, Placement) {
        let thread = self
            .threads
            .iter()
            .min_by_key(|thread| {
                thread.load_permille.load(Ordering::Relaxed)
                    + CONNECTION_LOAD_PERMILLE * thread.connections.load(Ordering::Relaxed) as u32
            })
            .expect("at least one network thread");
        thread.connections.fetch_add(1, Ordering::Relaxed);
        (
            thread.runtime.clone(),
            Placement {
                connections: thread.connections.clone(),
            },
        )
    }

    /// Stops the threads once their connections have ended, and waits for them.
    pub async fn stop(mut self) {
        self.signal_stop();
        let joins: Vec<_> = self
            .threads
            .iter_mut()
            .filter_map(|thread| thread.thread.take())
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for join in joins {
                if join.join().is_err() {
                    tracing::error!("a network thread panicked");
                }
            }
        })
        .await;
        if let Err(error) = joined {
            tracing::error!(%error, "cannot wait for the network threads");
        }
    }

    /// Tells every thread not yet told to stop once its runtime has nothing left to do.
    fn signal_stop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// Measures the calling thread's load every `sample_interval`, forever: its CPU time over the
/// interval's wall time, in thousandths.
async fn measure_load(load_permille: &AtomicU32, sample_interval: Duration) {
    let mut interval = tokio::time::interval(sample_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), thread_cpu_time());
    loop {
        interval.tick().await;
        let now = (Instant::now(), thread_cpu_time());
        let wall = now.0.duration_since(last.0);
        let cpu = now.1.saturating_sub(last.1);
        if !wall.is_zero() {
            let permille = (cpu.as_secs_f64() / wall.as_secs_f64() * 1000.0).min(1000.0);
            load_permille.store(permille as u32, Ordering::Relaxed);
        }
        last = now;
    }
}

/// The CPU time the calling thread has used.
#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the duration of the call.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(status, 0, "CLOCK_THREAD_CPUTIME_ID is supported");
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

impl Drop for NetworkThreads {
    /// Threads not stopped through [`NetworkThreads::stop`] (serving was abandoned) are told
    /// to stop and left to end on their own.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_and_stay_there() {
        // Loads are never sampled (they stay 0), so only connections count: the work this test
        // does on a thread (a 2 ms sample of a slow debug build) would otherwise outweigh one.
        let network = NetworkThreads::start_sampling(2, Duration::from_secs(3600)).unwrap();
        let (first, first_placement) = network.place();
        let (second, second_placement) = network.place();
        let thread_of = |handle: &tokio::runtime::Handle| {
            let handle = handle.clone();
            async move {
                handle
                    .spawn(async { std::thread::current().name().map(str::to_owned) })
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let first_name = thread_of(&first).await;
        let second_name = thread_of(&second).await;
        assert_ne!(first_name, second_name, "two connections, two threads");
        // A task woken again and again stays on its thread.
        let stays = first
            .spawn(async {
                let start = std::thread::current().id();
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                    assert_eq!(std::thread::current().id(), start);
                }
            })
            .await;
        assert!(stays.is_ok());
        // The first thread's connection closes: the next connection goes there.
        drop(first_placement);
        let (third, _third_placement) = network.place();
        assert_eq!(thread_of(&third).await, first_name);
        drop(second_placement);
        network.stop().await;
    }

    #[tokio::test]
    async fn a_busy_thread_gets_no_new_connections() {
        let network = NetworkThreads::start(2).unwrap();
        let (first, _first_placement) = network.place();
        let busy_name = first
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        // The first connection's thread works for a while: it answers request after request
        // inline, 1 ms of work each.
        let busy = first.spawn(async {
            let until = Instant::now() + LOAD_SAMPLE_INTERVAL * 5;
            while Instant::now() < until {
                let request_done = Instant::now() + Duration::from_millis(1);
                while Instant::now() < request_done {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
        tokio::time::sleep(LOAD_SAMPLE_INTERVAL * 3).await;
        // Idle connections on the other thread do not make it look busier.
        let mut placed = Vec::new();
        for _ in 0..3 {
            let (runtime, placement) = network.place();
            let name = runtime
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            assert_ne!(name, busy_name, "placed beside the busy connection");
            placed.push(placement);
        }
        busy.await.unwrap();
        network.stop().await;
    }
}
