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
//!
//! After a request arrives, every network thread keeps polling for [`NodeConfig::idle_poll_micros`]
//! before it sleeps in the kernel (`net.idlePollMicros`, default
//! [`IDLE_POLL_DEFAULT_MICROS`]; 0 turns it off), and for up to [`COMMAND_POLL_MAX_MICROS`]
//! while a command runs on a blocking thread. On a virtual machine a CPU with nothing to run is
//! halted, and waking a thread there goes through the hypervisor: tens of microseconds, more
//! than a read takes. A thread that polls instead keeps its CPU running, so the next request
//! (or the client's thread, woken by the reply) finds it awake. Each turn of the poll first
//! yields the CPU to any other thread that can run there (`sched_yield`); the time it polls in
//! vain is not counted in the thread's load. Seastar's reactor does the same
//! (`--idle-poll-time-us`, 200 us by default). docs/server.md ("Idle polling") has the costs.
//!
//! [`NodeConfig::idle_poll_micros`]: crate::NodeConfig::idle_poll_micros

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a network thread measures its own CPU time.
const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// What an open connection adds to its thread's load (CPU time per wall time, in thousandths)
/// when placing a new one, so that among idle threads the one with fewer connections wins.
const CONNECTION_LOAD_PERMILLE: u32 = 20;
/// How long the network threads poll for work after a request, by default (see the module's
/// comment).
pub const IDLE_POLL_DEFAULT_MICROS: u64 = 100;
/// The longest idle poll a configuration may ask for.
pub const IDLE_POLL_MAX_MICROS: u64 = 10_000;

/// The idle poll the threads run with for a configured one (cairnd refuses a longer one;
/// a node built in code gets the longest there is).
pub fn idle_poll_in_force(configured_micros: u64) -> u64 {
    configured_micros.min(IDLE_POLL_MAX_MICROS)
}
/// While a command runs on a blocking thread, the network threads poll for up to this long
/// after the last request (a `j: true` write's fdatasync, a short lock wait), so that its
/// reply, and the client's next request, find awake CPUs. A longer command lets them sleep.
const COMMAND_POLL_MAX_MICROS: u64 = 2_000;

/// Requests arriving at the node's network threads: when the last one came, and each thread's
/// poller.
///
/// Sleeping and waking: a poller says it is asleep, then checks the time of the last request
/// again; [`Activity::touch`] stores the time, then looks whether its thread's poller is
/// asleep (both SeqCst), so one of them sees the other. A polling poller wakes the others
/// ([`Activity::wake_others`]), off the request's path: waking a thread on another CPU is the
/// slow part.
struct Activity {
    epoch: Instant,
    /// When the last request arrived, in microseconds since `epoch` (at least 1); 0 before
    /// the first.
    last_request_micros: AtomicU64,
    idle_poll_micros: u64,
    /// Commands running on blocking threads.
    commands_running: AtomicUsize,
    /// One per network thread.
    pollers: Vec<Poller>,
    /// CPU time all threads spent polling with no request arriving, in nanoseconds
    /// (serverStatus).
    idle_polled_total_nanos: Arc<AtomicU64>,
}

/// A network thread's idle poller (a cache line of its own: its thread writes it on every
/// request).
#[derive(Default)]
#[repr(align(128))]
struct Poller {
    /// Waiting for a request, not polling.
    asleep: AtomicBool,
    wake: tokio::sync::Notify,
    /// Work seen on the thread (requests read, commands that ended): a turn of the poll that
    /// saw none was idle time.
    work: AtomicU64,
    /// CPU time the thread spent polling with no request arriving, in nanoseconds.
    idle_polled_nanos: AtomicU64,
}

impl Activity {
    fn now_micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A request arrived within the last `idle_poll_micros`, or within the last
    /// `COMMAND_POLL_MAX_MICROS` and a command is still running on a blocking thread.
    fn recent(&self) -> bool {
        let last = self.last_request_micros.load(Ordering::SeqCst);
        if last == 0 {
            return false;
        }
        let since = self.now_micros().saturating_sub(last);
        since < self.idle_poll_micros
            || (since < COMMAND_POLL_MAX_MICROS && self.commands_running.load(Ordering::SeqCst) > 0)
    }

    /// Work on network thread `thread` that the next request follows soon (a request, the end
    /// of a command): every thread polls for a while. Wakes only `thread`'s own poller, which
    /// costs no system call; that poller wakes the others.
    fn touch(&self, thread: usize) {
        if self.idle_poll_micros == 0 {
            return;
        }
        let poller = &self.pollers[thread];
        poller.work.fetch_add(1, Ordering::Relaxed);
        let now = self.now_micros().max(1);
        // Several requests in one microsecond write the line once.
        if self.last_request_micros.load(Ordering::Relaxed) != now {
            self.last_request_micros.store(now, Ordering::SeqCst);
        }
        Self::wake(poller);
    }

    fn wake(poller: &Poller) {
        if poller.asleep.load(Ordering::SeqCst) && poller.asleep.swap(false, Ordering::SeqCst) {
            poller.wake.notify_one();
        }
    }

    /// Wakes every poller but `thread`'s that is asleep.
    fn wake_others(&self, thread: usize) {
        for (index, poller) in self.pollers.iter().enumerate() {
            if index != thread {
                Self::wake(poller);
            }
        }
    }
}

/// A connection's handle on its network thread, to say that a request arrived.
#[derive(Clone)]
pub struct RequestSignal {
    activity: Arc<Activity>,
    thread: usize,
}

impl RequestSignal {
    /// A request arrived (its bytes were read): every network thread polls for the next one
    /// for a while.
    pub fn request_arrived(&self) {
        self.activity.touch(self.thread);
    }

    /// A command of this connection runs on a blocking thread until the returned guard is
    /// dropped: meanwhile the threads go on polling (for at most `COMMAND_POLL_MAX_MICROS`
    /// after the last request), and its end counts as a request (its reply goes out, and the
    /// client's next request follows).
    pub fn command_running(&self) -> CommandRunning {
        self.activity
            .commands_running
            .fetch_add(1, Ordering::SeqCst);
        CommandRunning {
            signal: self.clone(),
        }
    }
}

/// A command running on a blocking thread (see [`RequestSignal::command_running`]); dropped on
/// its connection's network thread.
pub struct CommandRunning {
    signal: RequestSignal,
}

impl Drop for CommandRunning {
    fn drop(&mut self) {
        let activity = &self.signal.activity;
        let before = activity.commands_running.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a running command ends once");
        activity.touch(self.signal.thread);
    }
}

/// Polls for work while the node had a request within the idle poll (see the module's
/// comment), sleeping otherwise; runs for ever as a task of its own on network thread
/// `thread`. A task, not part of the thread's `block_on` future: the runtime polls that future
/// before the tasks its sockets woke, while a task's yield comes back after them.
async fn idle_poll(activity: Arc<Activity>, thread: usize) {
    if activity.idle_poll_micros == 0 {
        return;
    }
    let poller = &activity.pollers[thread];
    loop {
        let mut cpu_before = thread_cpu_time();
        while activity.recent() {
            // A request on this thread woke only this poller (or found it awake): the others
            // poll too (a few loads when they already do).
            activity.wake_others(thread);
            let work = poller.work.load(Ordering::Relaxed);
            // Any other thread that can run on this CPU goes first.
            std::thread::yield_now();
            // Back after the runtime has polled its sockets (without blocking) and run the
            // tasks they woke.
            tokio::task::yield_now().await;
            let cpu_after = thread_cpu_time();
            if poller.work.load(Ordering::Relaxed) == work {
                let idle = cpu_after.saturating_sub(cpu_before).as_nanos() as u64;
                poller.idle_polled_nanos.fetch_add(idle, Ordering::Relaxed);
                activity
                    .idle_polled_total_nanos
                    .fetch_add(idle, Ordering::Relaxed);
            }
            cpu_before = cpu_after;
        }
        poller.asleep.store(true, Ordering::SeqCst);
        if activity.recent() {
            poller.asleep.store(false, Ordering::SeqCst);
            continue;
        }
        poller.wake.notified().await;
    }
}

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
    activity: Arc<Activity>,
}

/// A connection's place on a network thread: held by the connection's task, it counts the
/// connection there until dropped.
pub struct Placement {
    connections: Arc<AtomicUsize>,
    signal: RequestSignal,
}

impl Placement {
    /// What the connection calls when a request arrives.
    pub fn request_signal(&self) -> RequestSignal {
        self.signal.clone()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let before = self.connections.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "a placement is released once");
    }
}

impl NetworkThreads {
    /// Starts `count` threads (at least one) that poll for `idle_poll_micros` after a request,
    /// adding the CPU time they polled in vain to `idle_polled_nanos`.
    pub fn start(
        count: usize,
        idle_poll_micros: u64,
        idle_polled_nanos: Arc<AtomicU64>,
    ) -> std::io::Result<NetworkThreads> {
        NetworkThreads::start_sampling(
            count,
            idle_poll_micros,
            idle_polled_nanos,
            LOAD_SAMPLE_INTERVAL,
        )
    }

    /// [`NetworkThreads::start`], with the threads measuring their load every `sample_interval`.
    fn start_sampling(
        count: usize,
        idle_poll_micros: u64,
        idle_polled_nanos: Arc<AtomicU64>,
        sample_interval: Duration,
    ) -> std::io::Result<NetworkThreads> {
        let count = count.max(1);
        let activity = Arc::new(Activity {
            epoch: Instant::now(),
            last_request_micros: AtomicU64::new(0),
            idle_poll_micros: idle_poll_in_force(idle_poll_micros),
            commands_running: AtomicUsize::new(0),
            pollers: (0..count).map(|_| Poller::default()).collect(),
            idle_polled_total_nanos: idle_polled_nanos,
        });
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The runtime's blocking pool: the commands that may wait.
                .thread_name(format!("cairnd-work-{index}"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let load_permille = Arc::new(AtomicU32::new(0));
            let load = load_permille.clone();
            let thread_activity = activity.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cairnd-net-{index}"))
                .spawn(move || {
                    // Dropped with the runtime.
                    runtime.spawn(idle_poll(thread_activity.clone(), index));
                    runtime.block_on(async move {
                        let poller = &thread_activity.pollers[index];
                        tokio::select! {
                            _ = stopped => {}
                            _ = measure_load(&load, &poller.idle_polled_nanos, sample_interval) => {}
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
        Ok(NetworkThreads { threads, activity })
    }

    /// The thread a new connection goes to (the least loaded: see the module's comment), and
    /// the connection's placement there.
    pub fn place(&self) -> (tokio::runtime::Handle, Placement) {
        let (index, thread) = self
            .threads
            .iter()
            .enumerate()
            .min_by_key(|(_, thread)| {
                thread.load_permille.load(Ordering::Relaxed)
                    + CONNECTION_LOAD_PERMILLE * thread.connections.load(Ordering::Relaxed) as u32
            })
            .expect("at least one network thread");
        thread.connections.fetch_add(1, Ordering::Relaxed);
        (
            thread.runtime.clone(),
            Placement {
                connections: thread.connections.clone(),
                signal: RequestSignal {
                    activity: self.activity.clone(),
                    thread: index,
                },
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
/// interval's wall time, in thousandths, not counting the CPU time it polled with nothing to do
/// (`idle_polled_nanos`, the total so far).
async fn measure_load(
    load_permille: &AtomicU32,
    idle_polled_nanos: &AtomicU64,
    sample_interval: Duration,
) {
    let mut interval = tokio::time::interval(sample_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_polled = || Duration::from_nanos(idle_polled_nanos.load(Ordering::Relaxed));
    let mut last = (Instant::now(), thread_cpu_time(), idle_polled());
    loop {
        interval.tick().await;
        let now = (Instant::now(), thread_cpu_time(), idle_polled());
        let wall = now.0.duration_since(last.0);
        let cpu = now
            .1
            .saturating_sub(last.1)
            .saturating_sub(now.2.saturating_sub(last.2));
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
        let network =
            NetworkThreads::start_sampling(2, 0, Arc::default(), Duration::from_secs(3600))
                .unwrap();
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

    /// The CPU time a network thread has spent polling with nothing to do.
    fn idle_polled(network: &NetworkThreads, thread: usize) -> Duration {
        Duration::from_nanos(
            network.activity.pollers[thread]
                .idle_polled_nanos
                .load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn a_request_keeps_every_thread_polling_for_a_while_then_they_sleep() {
        let window = Duration::from_millis(20);
        let network = NetworkThreads::start_sampling(
            2,
            window.as_micros() as u64,
            Arc::default(),
            LOAD_SAMPLE_INTERVAL,
        )
        .unwrap();
        // No request yet: nobody polls.
        tokio::time::sleep(window * 2).await;
        assert_eq!(idle_polled(&network, 0), Duration::ZERO);
        assert_eq!(idle_polled(&network, 1), Duration::ZERO);
        // A request on one thread: both threads poll (the other thread's CPU is kept awake
        // for the client's next wake-up too). Signalled again until both have, since a loaded
        // machine may not run a thread within one window.
        let (_, placement) = network.place();
        let signal = placement.request_signal();
        let both_polled_since = |before: (Duration, Duration)| {
            let signal = signal.clone();
            let network = &network;
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                while (idle_polled(network, 0) == before.0 || idle_polled(network, 1) == before.1)
                    && Instant::now() < deadline
                {
                    signal.request_arrived();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                assert!(idle_polled(network, 0) > before.0, "thread 0 polled");
                assert!(idle_polled(network, 1) > before.1, "thread 1 polled");
            }
        };
        both_polled_since((Duration::ZERO, Duration::ZERO)).await;
        // Once the window has passed, they sleep: both say so, and poll no more.
        let deadline = Instant::now() + Duration::from_secs(10);
        let asleep = |thread: usize| {
            network.activity.pollers[thread]
                .asleep
                .load(Ordering::SeqCst)
        };
        while !(asleep(0) && asleep(1)) && Instant::now() < deadline {
            tokio::time::sleep(window).await;
        }
        assert!(
            asleep(0) && asleep(1),
            "both pollers sleep after the window"
        );
        let settled = (idle_polled(&network, 0), idle_polled(&network, 1));
        tokio::time::sleep(window * 3).await;
        assert_eq!(
            (idle_polled(&network, 0), idle_polled(&network, 1)),
            settled
        );
        // Another request wakes both again.
        both_polled_since(settled).await;
        drop(placement);
        network.stop().await;
    }

    #[test]
    fn a_running_command_extends_the_poll_up_to_its_limit() {
        let activity = Arc::new(Activity {
            epoch: Instant::now(),
            last_request_micros: AtomicU64::new(0),
            idle_poll_micros: 500,
            commands_running: AtomicUsize::new(0),
            pollers: vec![Poller::default()],
            idle_polled_total_nanos: Arc::default(),
        });
        let signal = RequestSignal {
            activity: activity.clone(),
            thread: 0,
        };
        assert!(!activity.recent(), "no request yet");
        // Each check holds only if this thread ran in time (a loaded machine may stall it for
        // longer than the limits); `checked` makes sure the test did check something.
        let mut checked = 0;
        let wait_until = |start: Instant, micros: u64| {
            while start.elapsed() < Duration::from_micros(micros) {
                std::hint::spin_loop();
            }
        };
        for _attempt in 0..20 {
            let arrived = Instant::now();
            signal.request_arrived();
            let running = signal.command_running();
            // Past the idle poll, inside the command's limit: still polling.
            wait_until(arrived, 800);
            let recent = activity.recent();
            let in_time = arrived.elapsed() < Duration::from_micros(COMMAND_POLL_MAX_MICROS - 200);
            // Past the command's limit: not any more, though the command still runs.
            wait_until(arrived, COMMAND_POLL_MAX_MICROS + 200);
            assert!(
                !activity.recent(),
                "a long command does not keep the threads polling"
            );
            // Its end counts as a request.
            drop(running);
            let ended = Instant::now();
            let recent_after_end = activity.recent();
            let ended_in_time = ended.elapsed() < Duration::from_micros(300);
            if in_time && ended_in_time {
                assert!(recent, "polling while the command runs");
                assert!(recent_after_end, "polling after the command ended");
                checked += 1;
            }
            // Without a command the idle poll alone decides.
            let arrived = Instant::now();
            signal.request_arrived();
            wait_until(arrived, 800);
            assert!(!activity.recent(), "no command: the idle poll has passed");
            if checked >= 3 {
                break;
            }
        }
        assert!(checked > 0, "the machine never ran this test in time");
        assert_eq!(activity.commands_running.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn idle_polling_is_not_load() {
        let total = Arc::new(AtomicU64::new(0));
        let network = NetworkThreads::start_sampling(
            2,
            IDLE_POLL_MAX_MICROS,
            total.clone(),
            LOAD_SAMPLE_INTERVAL,
        )
        .unwrap();
        let (_, placement) = network.place();
        let signal = placement.request_signal();
        // Requests keep both threads polling for several load samples; they do nothing else.
        let until = Instant::now() + LOAD_SAMPLE_INTERVAL * 5;
        while Instant::now() < until {
            signal.request_arrived();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            !idle_polled(&network, 0).is_zero() && !idle_polled(&network, 1).is_zero(),
            "both threads polled"
        );
        // Past the window the counters stay still.
        tokio::time::sleep(Duration::from_micros(IDLE_POLL_MAX_MICROS) * 3).await;
        assert_eq!(
            total.load(Ordering::Relaxed) as u128,
            (idle_polled(&network, 0) + idle_polled(&network, 1)).as_nanos(),
            "the node's total counts both threads"
        );
        for thread in &network.threads {
            let load = thread.load_permille.load(Ordering::Relaxed);
            assert!(
                load < 300,
                "a thread that only polled has a load of {load} permille"
            );
        }
        drop(placement);
        network.stop().await;
    }

    #[tokio::test]
    async fn a_busy_thread_gets_no_new_connections() {
        let network = NetworkThreads::start(2, 0, Arc::default()).unwrap();
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
