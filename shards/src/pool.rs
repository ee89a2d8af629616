//! The blocking pool: a few plain threads, shared by all shards, for work that may block (DNS,
//! databases, exec). Jobs are boxed closures; the shard side wraps them so their result is
//! posted back to the spawning shard's mailbox. The pool itself knows nothing of shards.
//!
//! Stopping drops the jobs not yet started and waits for the running ones to return.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stop: bool,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a poisoned lock still guards a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Pool {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn start(threads: usize, name: &str) -> io::Result<Self> {
        let inner = Arc::new(Inner::default());
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let inner2 = inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-blocking-{i}"))
                .spawn(move || worker(&inner2));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let pool = Self {
                        inner,
                        threads: Mutex::new(handles),
                    };
                    pool.stop_and_join();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            inner,
            threads: Mutex::new(handles),
        })
    }

    /// Queues `job`; never blocks beyond the queue lock. Dropped if the pool is stopping.
    pub(crate) fn submit(&self, job: Job) {
        let mut q = self.inner.lock();
        if q.stop {
            return;
        }
        q.jobs.push_back(job);
        drop(q);
        self.inner.ready.notify_one();
    }

    pub(crate) fn stop_and_join(&self) {
        let dropped = {
            let mut q = self.inner.lock();
            q.stop = true;
            std::mem::take(&mut q.jobs)
        };
        // Dropped outside the lock: a job's captures may hold anything, even the pool's owner.
        drop(dropped);
        self.inner.ready.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

fn worker(inner: &Inner) {
    loop {
        let job = {
            let mut q = inner.lock();
            loop {
                if q.stop {
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q = inner.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        // Callers wrap their jobs in catch_unwind; this one only keeps the worker alive.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}
