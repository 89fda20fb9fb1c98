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
//! thread. A new connection goes to the thread with the fewest open connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Network threads when the configuration leaves it to the machine: one per core.
pub fn default_thread_count() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

struct NetworkThread {
    runtime: tokio::runtime::Handle,
    /// Open connections placed on this thread.
    connections: Arc<AtomicUsize>,
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
        let mut threads = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("cairnd-net-{index}"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("cairnd-net-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                    // Dropped here, on its own thread, outside any runtime: waits for the
                    // blocking commands its connections started.
                    drop(runtime);
                })?;
            threads.push(NetworkThread {
                runtime: handle,
                connections: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(NetworkThreads { threads })
    }

    /// The thread a new connection goes to (the one with the fewest open connections, the
    /// first of them on a tie), and the connection's placement there.
    pub fn place(&self) -> (tokio::runtime::Handle, Placement) {
        let thread = self
            .threads
            .iter()
            .min_by_key(|thread| thread.connections.load(Ordering::Relaxed))
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
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
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
}

impl Drop for NetworkThreads {
    /// Threads not stopped through [`NetworkThreads::stop`] (serving was abandoned) are told
    /// to stop and left to end on their own.
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_and_stay_there() {
        let network = NetworkThreads::start(2).unwrap();
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
}
