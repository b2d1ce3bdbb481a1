//! The group-commit writer: one writer per process takes every write, commits whatever is
//! waiting — up to [`WriterConfig::max_batch`] — in one transaction, and answers each write only
//! once that commit returned (is durable). Many requests share one commit and its fsync, so
//! throughput is not one fsync per request, and nothing is acknowledged that could still be
//! lost.
//!
//! The service supplies only "apply these operations in one transaction and commit" per
//! backend ([`Commit`]); this module owns the rest: the queue ([`channel`]), sending an
//! operation and waiting for its commit ([`WriterHandle::write`]), closing ([`WriterHandle::close`],
//! [`WriterHandle::close_and_wait`]), batching ([`Queue::run`]), retrying a batch that lost a
//! race ([`CommitError::Retry`]), and the per-operation answers (a failed commit answers every
//! operation of its batch with the error; an operation the batch refused alone gets its own).

use std::future::Future;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::error::{corrupt, is_retryable, unavailable, StoreError};

/// How a writer batches, retries and reports.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Writes that may wait for the writer before senders wait too.
    pub queue: usize,
    /// The most writes one commit takes.
    pub max_batch: usize,
    /// How often a batch is tried when its transaction loses a race ([`CommitError::Retry`]):
    /// 1 never retries.
    pub attempts: usize,
    pub metrics: WriterMetrics,
}

/// The names of a writer's metrics (each service its own).
#[derive(Debug, Clone, Copy)]
pub struct WriterMetrics {
    /// Histogram: writes per committed batch.
    pub batch_size: &'static str,
    /// Histogram in seconds, labelled `op`: `write` (sent → answered, per write) and `commit`
    /// (one batch, retries included).
    pub seconds: &'static str,
    /// Counter: batch transactions run again after losing a race.
    pub retries: &'static str,
}

/// Why a batch's transaction did not commit (it was rolled back whole).
#[derive(Debug)]
pub enum CommitError {
    /// It lost a race (serialization failure, deadlock, busy: [`is_retryable`]) and may be run
    /// again as it is; past [`WriterConfig::attempts`] every write gets the error.
    Retry(StoreError),
    /// Anything else: every write of the batch gets the error, at once.
    Failed(StoreError),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> CommitError {
        if is_retryable(&e) {
            CommitError::Retry(unavailable(e))
        } else {
            CommitError::Failed(e.into())
        }
    }
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> CommitError {
        CommitError::Failed(e)
    }
}

/// What a committed batch produced, one result per operation, in the batch's order: `Err` for
/// an operation the batch refused alone (the rest of it committed).
pub type Applied<Out> = Vec<Result<Out, StoreError>>;

/// A service's side of the writer, per backend: apply a batch in one transaction.
pub trait Commit: Send {
    type Op: Send + Sync + 'static;
    type Out: Send + 'static;

    /// Whether `op` must be committed in a transaction of its own (after the batch it came
    /// with): `commit` then gets it alone.
    fn alone(_op: &Self::Op) -> bool {
        false
    }

    /// Apply `ops` in one transaction and commit it. `Ok` only once the commit returned; on
    /// `Err` nothing of it may be committed, and any state the service keeps beside the
    /// database must be as before (the batch may be run again).
    fn commit(
        &mut self,
        ops: &[Self::Op],
    ) -> impl Future<Output = Result<Applied<Self::Out>, CommitError>> + Send;

    /// Called once when the writer ends (every handle closed, every write answered), before
    /// [`WriterHandle::close_and_wait`] returns: e.g. close the connection.
    fn finish(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }

    /// For a backend whose commit returns before the batch is on disk (SQLite at
    /// `synchronous=NORMAL`, the writer syncing the WAL itself): the sync that makes every
    /// commit returned so far durable. Asked once, when the writer starts. With one, the writer
    /// hands each committed batch to a sync stage of its own thread and commits the next batch
    /// while that one is being synced (pipelined group commit); the stage answers a batch's
    /// writes only after a sync that began after its commit returned. `None` (the default):
    /// a commit is durable when it returns, and its writes are answered at once.
    fn durability(&mut self) -> Option<Durability> {
        None
    }

    /// What to do once the batch just committed is durable (e.g. publish the log's new head):
    /// asked right after each commit that returned `Ok`. With no [`durability`](Self::durability)
    /// it runs at once.
    fn after_durable(&mut self) -> Option<AfterDurable> {
        None
    }
}

/// Work left for when a committed batch is durable ([`Commit::after_durable`]).
pub type AfterDurable = Box<dyn FnOnce() + Send>;

/// The sync of a backend whose commits return before they are durable ([`Commit::durability`]):
/// called on the sync stage's thread; `Ok` once everything committed before the call began is
/// on disk. A failed sync fails closed: the writes it covered are answered with the error, and
/// the writer refuses every write after it (the process must be restarted, as after any I/O
/// error on its database).
pub struct Durability {
    pub sync: Box<dyn FnMut() -> std::io::Result<()> + Send>,
    /// The sync stage thread's name.
    pub thread: &'static str,
}

type Reply<Out> = oneshot::Sender<Result<Out, StoreError>>;
/// A write on its way to the writer, with where its answer goes.
type Sent<Op, Out> = (Op, Reply<Out>);

/// The sending side of a writer: writes go through it until it is closed, after which they are
/// refused (`Unavailable`).
pub struct WriterHandle<Op, Out> {
    tx: std::sync::Mutex<Option<mpsc::Sender<Sent<Op, Out>>>>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    seconds: &'static str,
}

/// The receiving side of a writer, to [`run`](Queue::run) where the service wants its writer (a
/// task, or a thread with a runtime of its own).
pub struct Queue<Op, Out> {
    rx: mpsc::Receiver<Sent<Op, Out>>,
    done: oneshot::Sender<()>,
    config: WriterConfig,
}

/// A writer's two sides. Dropping the [`Queue`] without running it (opening failed) makes every
/// write fail and `close_and_wait` return at once.
pub fn channel<Op, Out>(config: WriterConfig) -> (WriterHandle<Op, Out>, Queue<Op, Out>) {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let (done_tx, done_rx) = oneshot::channel();
    (
        WriterHandle {
            tx: std::sync::Mutex::new(Some(tx)),
            done: tokio::sync::Mutex::new(Some(done_rx)),
            seconds: config.metrics.seconds,
        },
        Queue {
            rx,
            done: done_tx,
            config,
        },
    )
}

impl<Op, Out> WriterHandle<Op, Out> {
    fn sender(&self) -> Result<mpsc::Sender<Sent<Op, Out>>, StoreError> {
        self.tx
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .filter(|w| !w.is_closed())
            .ok_or_else(|| unavailable("the store is closed"))
    }

    /// Is the writer taking writes?
    pub fn is_up(&self) -> bool {
        self.sender().is_ok()
    }

    /// Stop taking writes; the writer ends once it committed and answered what it has.
    pub fn close(&self) {
        if let Ok(mut w) = self.tx.lock() {
            w.take();
        }
    }

    /// [`close`](Self::close), then wait until the writer has answered every write already sent
    /// and finished ([`Commit::finish`]).
    pub async fn close_and_wait(&self) {
        self.close();
        if let Some(done) = self.done.lock().await.take() {
            let _ = done.await;
        }
    }

    /// Hand `op` to the writer and wait until the transaction that holds it committed; its
    /// result.
    pub async fn write(&self, op: Op) -> Result<Out, StoreError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send((op, tx))
            .await
            .map_err(|_| unavailable("the writer has stopped"))?;
        let r = rx
            .await
            .map_err(|_| unavailable("the writer has stopped"))?;
        metrics::histogram!(self.seconds, "op" => "write").record(started.elapsed().as_secs_f64());
        r
    }
}

impl<Op: Send + Sync + 'static, Out: Send + 'static> Queue<Op, Out> {
    /// The writer: until every handle is closed and every write sent is answered, take what is
    /// waiting (up to `max_batch`), commit the writes that may share a transaction in one, then
    /// each [`alone`](Commit::alone) write in its own, and answer each write after its commit.
    pub async fn run<C: Commit<Op = Op, Out = Out>>(mut self, mut c: C) {
        let stage = match c.durability() {
            Some(d) => match SyncStage::start(d, self.config.metrics) {
                Ok(s) => Some(s),
                Err(e) => {
                    // No way to make commits durable: take no write at all.
                    tracing::error!(error = %e, "cannot start the store's sync stage; every write is refused");
                    self.rx.close();
                    while let Some((_, reply)) = self.rx.recv().await {
                        let _ = reply.send(Err(unavailable(format!(
                            "the store's sync stage did not start: {e}"
                        ))));
                    }
                    c.finish().await;
                    drop(self.done);
                    return;
                }
            },
            None => None,
        };
        let max = self.config.max_batch.max(1);
        let mut waiting: Vec<Sent<Op, Out>> = Vec::with_capacity(max);
        let mut ops: Vec<Op> = Vec::with_capacity(max);
        let mut replies: Vec<Reply<Out>> = Vec::with_capacity(max);
        let mut alone: Vec<Sent<Op, Out>> = Vec::new();
        loop {
            if let Some(stage) = &stage {
                // A batch committed while the last sync runs waits for the next one anyway:
                // commit again only once the sync stage has taken it, so that everything that
                // arrived meanwhile shares one commit (one pass over the pages it touches).
                stage.taken().await;
            }
            if self.rx.recv_many(&mut waiting, max).await == 0 {
                break;
            }
            for (op, reply) in waiting.drain(..) {
                if C::alone(&op) {
                    alone.push((op, reply));
                } else {
                    ops.push(op);
                    replies.push(reply);
                }
            }
            if let Some(e) = stage.as_ref().and_then(SyncStage::failed) {
                // A sync failed: nothing more is committed (it could not be made durable).
                for (_, r) in ops.drain(..).zip(replies.drain(..)) {
                    let _ = r.send(Err(e.clone()));
                }
                for (_, r) in alone.drain(..) {
                    let _ = r.send(Err(e.clone()));
                }
                continue;
            }
            if !ops.is_empty() {
                let started = Instant::now();
                let m = self.config.metrics;
                metrics::histogram!(m.batch_size).record(ops.len() as f64);
                match self.attempt(&mut c, &ops).await {
                    Ok(applied) => {
                        let after = c.after_durable();
                        let replies = std::mem::replace(&mut replies, Vec::with_capacity(max));
                        settle(stage.as_ref(), Settle::Batch(replies, applied), after);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, writes = ops.len(), "store commit failed; nothing in this batch is acknowledged");
                        for r in replies.drain(..) {
                            let _ = r.send(Err(e.clone()));
                        }
                    }
                }
                ops.clear();
                metrics::histogram!(m.seconds, "op" => "commit")
                    .record(started.elapsed().as_secs_f64());
            }
            for (op, reply) in alone.drain(..) {
                match self.attempt(&mut c, std::slice::from_ref(&op)).await {
                    Ok(applied) => {
                        let r = applied.into_iter().next().unwrap_or_else(no_result);
                        let after = c.after_durable();
                        settle(stage.as_ref(), Settle::One(reply, r), after);
                    }
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
        }
        if let Some(stage) = stage {
            // Every write committed is answered before the writer says it is done.
            stage.close().await;
        }
        c.finish().await;
        drop(self.done);
    }

    /// Commit `ops`, running the transaction again while it loses races, up to `attempts`.
    async fn attempt<C: Commit<Op = Op, Out = Out>>(
        &self,
        c: &mut C,
        ops: &[Op],
    ) -> Result<Applied<Out>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match c.commit(ops).await {
                Ok(applied) => return Ok(applied),
                Err(CommitError::Retry(e)) if attempt < self.config.attempts => {
                    metrics::counter!(self.config.metrics.retries).increment(1);
                    tracing::info!(error = %e, attempt, "batch transaction retried (serialization failure, deadlock or busy)");
                }
                Err(CommitError::Retry(e) | CommitError::Failed(e)) => return Err(e),
            }
        }
    }
}

/// A committed batch's answers, waiting for durability.
enum Settle<Out> {
    Batch(Vec<Reply<Out>>, Applied<Out>),
    /// An `alone` write.
    One(Reply<Out>, Result<Out, StoreError>),
}

impl<Out> Settle<Out> {
    fn answer(self) {
        match self {
            Settle::Batch(mut replies, applied) => answer(&mut replies, applied),
            Settle::One(reply, r) => drop(reply.send(r)),
        }
    }

    fn fail(self, e: &StoreError) {
        match self {
            Settle::Batch(replies, _) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
            Settle::One(reply, _) => drop(reply.send(Err(e.clone()))),
        }
    }
}

/// Answer a committed batch: at once when commits are durable when they return, else once the
/// sync stage has synced it.
fn settle<Out: Send + 'static>(
    stage: Option<&SyncStage<Out>>,
    s: Settle<Out>,
    after: Option<AfterDurable>,
) {
    match stage {
        None => {
            if let Some(f) = after {
                f();
            }
            s.answer();
        }
        Some(stage) => stage.send(s, after),
    }
}

type Synced<Out> = (Settle<Out>, Option<AfterDurable>);

/// The sync stage of a pipelined writer: a thread that takes every batch committed since its
/// last sync, syncs once, then runs their [`AfterDurable`] work and answers their writes, in
/// commit order. After a failed sync it syncs nothing more: what it holds and gets is answered
/// with the error, and [`SyncStage::failed`] tells the writer to commit nothing more.
struct SyncStage<Out> {
    tx: std::sync::mpsc::Sender<Synced<Out>>,
    failed: std::sync::Arc<std::sync::OnceLock<StoreError>>,
    ended: oneshot::Receiver<()>,
    /// Batches sent that no sync has taken yet, and the stage's signal when it takes some.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    took: std::sync::Arc<tokio::sync::Notify>,
}

impl<Out: Send + 'static> SyncStage<Out> {
    fn start(d: Durability, m: WriterMetrics) -> std::io::Result<SyncStage<Out>> {
        let (tx, rx) = std::sync::mpsc::channel::<Synced<Out>>();
        let failed = std::sync::Arc::new(std::sync::OnceLock::new());
        let (ended_tx, ended) = oneshot::channel();
        let f = failed.clone();
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let took = std::sync::Arc::new(tokio::sync::Notify::new());
        let (q, t) = (queued.clone(), took.clone());
        let mut sync = d.sync;
        std::thread::Builder::new()
            .name(d.thread.into())
            .spawn(move || {
                let mut pending: Vec<Synced<Out>> = Vec::new();
                while let Ok(first) = rx.recv() {
                    pending.push(first);
                    pending.extend(rx.try_iter());
                    q.fetch_sub(pending.len(), std::sync::atomic::Ordering::SeqCst);
                    t.notify_waiters();
                    if let Some(e) = f.get() {
                        for (s, _) in pending.drain(..) {
                            s.fail(e);
                        }
                        continue;
                    }
                    let started = Instant::now();
                    let r = sync();
                    metrics::histogram!(m.seconds, "op" => "sync")
                        .record(started.elapsed().as_secs_f64());
                    match r {
                        Ok(()) => {
                            for (s, after) in pending.drain(..) {
                                if let Some(after) = after {
                                    after();
                                }
                                s.answer();
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, writes = pending.len(), "store sync failed: nothing it covered is acknowledged, and the store takes no more writes");
                            let e = f.get_or_init(|| {
                                unavailable(format!(
                                    "the database could not be synced to disk ({e}); restart the service"
                                ))
                            });
                            for (s, _) in pending.drain(..) {
                                s.fail(e);
                            }
                        }
                    }
                }
                let _ = ended_tx.send(());
            })?;
        Ok(SyncStage {
            tx,
            failed,
            ended,
            queued,
            took,
        })
    }

    fn send(&self, s: Settle<Out>, after: Option<AfterDurable>) {
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError((s, _))) = self.tx.send((s, after)) {
            self.queued
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            s.fail(&unavailable("the store's sync stage has stopped"));
        }
    }

    /// Wait until a sync has taken every batch sent (at once when none waits).
    async fn taken(&self) {
        loop {
            let signal = self.took.notified();
            if self.queued.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            signal.await;
        }
    }

    fn failed(&self) -> Option<StoreError> {
        self.failed.get().cloned()
    }

    /// Wait until every batch sent has been synced and answered.
    async fn close(self) {
        drop(self.tx);
        let _ = self.ended.await;
    }
}

fn no_result<Out>() -> Result<Out, StoreError> {
    Err(corrupt("a write of the batch got no result"))
}

/// Answer the writes of a committed batch, each with its own result.
fn answer<Out>(replies: &mut Vec<Reply<Out>>, applied: Applied<Out>) {
    let mut applied = applied.into_iter();
    for r in replies.drain(..) {
        let _ = r.send(applied.next().unwrap_or_else(no_result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::Semaphore;

    const CONFIG: WriterConfig = WriterConfig {
        queue: 64,
        max_batch: 4,
        attempts: 3,
        metrics: WriterMetrics {
            batch_size: "test_batch_size",
            seconds: "test_seconds",
            retries: "test_retries_total",
        },
    };

    /// Ops are numbers; a committed op answers twice itself. 13 makes its batch fail, 7 is
    /// refused alone, 1000 and more commit alone; `races` commits lose a race first.
    struct Fake {
        /// Each committed batch, appended when its commit returns.
        committed: Arc<Mutex<Vec<Vec<u32>>>>,
        /// One permit per commit (tries included): the test decides when a commit may run.
        gate: Arc<Semaphore>,
        races: usize,
        tries: Arc<Mutex<usize>>,
        finished: Arc<Mutex<bool>>,
    }

    impl Commit for Fake {
        type Op = u32;
        type Out = u32;

        fn alone(op: &u32) -> bool {
            *op >= 1000
        }

        async fn commit(&mut self, ops: &[u32]) -> Result<Applied<u32>, CommitError> {
            self.gate.acquire().await.unwrap().forget();
            *self.tries.lock().unwrap() += 1;
            if self.races > 0 {
                self.races -= 1;
                return Err(CommitError::Retry(unavailable("could not serialize")));
            }
            if ops.contains(&13) {
                return Err(CommitError::Failed(corrupt("13 does not read back")));
            }
            let out = ops
                .iter()
                .map(|&o| match o {
                    7 => Err(StoreError::Conflict("seven".into())),
                    o => Ok(o * 2),
                })
                .collect();
            self.committed.lock().unwrap().push(ops.to_vec());
            Ok(out)
        }

        async fn finish(self) {
            *self.finished.lock().unwrap() = true;
        }
    }

    struct Rig {
        w: Arc<WriterHandle<u32, u32>>,
        committed: Arc<Mutex<Vec<Vec<u32>>>>,
        gate: Arc<Semaphore>,
        tries: Arc<Mutex<usize>>,
        finished: Arc<Mutex<bool>>,
    }

    fn rig(races: usize, config: WriterConfig) -> Rig {
        let (w, q) = channel(config);
        let r = Rig {
            w: Arc::new(w),
            committed: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            tries: Arc::default(),
            finished: Arc::default(),
        };
        tokio::spawn(q.run(Fake {
            committed: r.committed.clone(),
            gate: r.gate.clone(),
            races,
            tries: r.tries.clone(),
            finished: r.finished.clone(),
        }));
        r
    }

    impl Rig {
        /// Send `op` from a task of its own; its answer, checked to come after its commit.
        fn send(&self, op: u32) -> tokio::task::JoinHandle<Result<u32, StoreError>> {
            let (w, committed) = (self.w.clone(), self.committed.clone());
            tokio::spawn(async move {
                let r = w.write(op).await;
                if r.is_ok() {
                    let c = committed.lock().unwrap();
                    assert!(
                        c.iter().any(|b| b.contains(&op)),
                        "{op} answered before its commit"
                    );
                }
                r
            })
        }

        /// Wait until `n` writes wait in the queue.
        async fn queued(&self, n: usize) {
            let tx = self.w.sender().unwrap();
            for _ in 0..500 {
                if tx.max_capacity() - tx.capacity() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("{n} writes never queued");
        }
    }

    #[tokio::test]
    async fn waiting_writes_share_commits_of_at_most_max_batch_each_answered_after_it() {
        let r = rig(0, CONFIG);
        let first = r.send(0);
        // The writer took op 0 and waits at the gate; ten more queue up behind it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rest: Vec<_> = (1..=10).map(|i| r.send(i)).collect();
        r.queued(10).await;
        assert!(
            r.committed.lock().unwrap().is_empty(),
            "nothing committed before the gate opens"
        );
        r.gate.add_permits(100);
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (i, h) in rest.into_iter().enumerate() {
            let i = i as u32 + 1;
            let got = h.await.unwrap();
            if i == 7 {
                assert_eq!(
                    got,
                    Err(StoreError::Conflict("seven".into())),
                    "refused alone"
                );
            } else {
                assert_eq!(got, Ok(i * 2));
            }
        }
        let batches = r.committed.lock().unwrap().clone();
        assert_eq!(batches[0], vec![0]);
        let sizes: Vec<usize> = batches[1..].iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 2], "{batches:?}");
        let mut all: Vec<u32> = batches.concat();
        all.sort();
        assert_eq!(all, (0..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failed_commit_answers_every_write_of_its_batch_with_the_error() {
        let r = rig(0, CONFIG);
        let first = r.send(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let batch: Vec<_> = [12, 13, 14].into_iter().map(|i| r.send(i)).collect();
        r.queued(3).await;
        r.gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Ok(0));
        for h in batch {
            assert_eq!(
                h.await.unwrap(),
                Err(StoreError::Corrupt("13 does not read back".into())),
                "a corrupt batch stays corrupt for every write"
            );
        }
        // The writer goes on.
        assert_eq!(r.send(15).await.unwrap(), Ok(30));
        assert!(!r.committed.lock().unwrap().concat().contains(&12));
    }

    #[tokio::test]
    async fn a_batch_that_loses_a_race_is_run_again_up_to_the_attempts() {
        let r = rig(2, CONFIG);
        r.gate.add_permits(100);
        assert_eq!(r.send(5).await.unwrap(), Ok(10));
        assert_eq!(*r.tries.lock().unwrap(), 3, "two races, then the commit");
        let r = rig(3, CONFIG);
        r.gate.add_permits(100);
        let e = r.send(5).await.unwrap().unwrap_err();
        assert_eq!(e, unavailable("could not serialize"), "attempts used up");
        assert_eq!(*r.tries.lock().unwrap(), 3);
        let once = WriterConfig {
            attempts: 1,
            ..CONFIG
        };
        let r = rig(1, once);
        r.gate.add_permits(100);
        assert!(r.send(5).await.unwrap().is_err());
        assert_eq!(*r.tries.lock().unwrap(), 1, "attempts 1: never retried");
    }

    #[tokio::test]
    async fn writes_that_must_be_alone_commit_alone_after_their_batch() {
        let r = rig(0, CONFIG);
        let first = r.send(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let hs: Vec<_> = [1000, 1, 1001, 2].into_iter().map(|i| r.send(i)).collect();
        r.queued(4).await;
        r.gate.add_permits(100);
        first.await.unwrap().unwrap();
        for h in hs {
            h.await.unwrap().unwrap();
        }
        let batches = r.committed.lock().unwrap().clone();
        assert_eq!(batches.len(), 4, "{batches:?}");
        assert_eq!(batches[0], vec![0]);
        let mut shared = batches[1].clone();
        shared.sort();
        assert_eq!(shared, vec![1, 2]);
        let mut alone = vec![batches[2].clone(), batches[3].clone()];
        alone.sort();
        assert_eq!(alone, vec![vec![1000], vec![1001]]);
    }

    #[tokio::test]
    async fn a_closed_writer_refuses_writes_after_answering_those_sent() {
        let r = rig(0, CONFIG);
        let sent = r.send(3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(r.w.is_up());
        r.w.close();
        assert!(!r.w.is_up());
        assert_eq!(
            r.w.write(4).await,
            Err(unavailable("the store is closed")),
            "refused once closed"
        );
        assert!(
            !*r.finished.lock().unwrap(),
            "a write is still being committed"
        );
        r.gate.add_permits(100);
        r.w.close_and_wait().await;
        assert_eq!(
            sent.await.unwrap(),
            Ok(6),
            "the write sent before closing is answered"
        );
        assert!(
            *r.finished.lock().unwrap(),
            "finish ran before close_and_wait returned"
        );
        assert_eq!(r.w.write(5).await, Err(unavailable("the store is closed")));
    }

    #[tokio::test]
    async fn a_writer_that_never_ran_fails_writes_and_closes_at_once() {
        let (w, q) = channel::<u32, u32>(CONFIG);
        drop(q);
        assert!(w.write(1).await.is_err());
        assert!(!w.is_up());
        w.close_and_wait().await;
    }

    /// A backend whose commits are durable only after its sync ([`Commit::durability`]): each
    /// commit appends its ops to `committed`; a sync (gated by `syncs`) moves everything
    /// committed into `durable`, or fails when `fail_sync` is set.
    struct Pipelined {
        committed: Arc<Mutex<Vec<u32>>>,
        durable: Arc<Mutex<Vec<u32>>>,
        syncs: Arc<Semaphore>,
        fail_sync: Arc<Mutex<bool>>,
        after: Arc<Mutex<Vec<usize>>>,
    }

    impl Commit for Pipelined {
        type Op = u32;
        type Out = u32;

        async fn commit(&mut self, ops: &[u32]) -> Result<Applied<u32>, CommitError> {
            self.committed.lock().unwrap().extend_from_slice(ops);
            Ok(ops.iter().map(|o| Ok(o * 2)).collect())
        }

        fn durability(&mut self) -> Option<Durability> {
            let (committed, durable, syncs, fail) = (
                self.committed.clone(),
                self.durable.clone(),
                self.syncs.clone(),
                self.fail_sync.clone(),
            );
            Some(Durability {
                sync: Box::new(move || {
                    // Blocks the sync thread until the test lets one sync run.
                    while syncs.try_acquire().map(|p| p.forget()).is_err() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if *fail.lock().unwrap() {
                        return Err(std::io::Error::other("disk on fire"));
                    }
                    let now = committed.lock().unwrap().clone();
                    *durable.lock().unwrap() = now;
                    Ok(())
                }),
                thread: "test-sync",
            })
        }

        fn after_durable(&mut self) -> Option<AfterDurable> {
            let n = self.committed.lock().unwrap().len();
            let after = self.after.clone();
            Some(Box::new(move || after.lock().unwrap().push(n)))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_writes_are_answered_after_a_sync_and_the_next_batch_commits_meanwhile() {
        let (w, q) = channel::<u32, u32>(CONFIG);
        let w = Arc::new(w);
        let p = Pipelined {
            committed: Arc::default(),
            durable: Arc::default(),
            syncs: Arc::new(Semaphore::new(0)),
            fail_sync: Arc::default(),
            after: Arc::default(),
        };
        let (committed, durable, syncs, fail, after) = (
            p.committed.clone(),
            p.durable.clone(),
            p.syncs.clone(),
            p.fail_sync.clone(),
            p.after.clone(),
        );
        tokio::spawn(q.run(p));
        let send = |op: u32| {
            let (w, durable) = (w.clone(), durable.clone());
            tokio::spawn(async move {
                let r = w.write(op).await;
                if r.is_ok() {
                    assert!(
                        durable.lock().unwrap().contains(&op),
                        "{op} answered before it was durable"
                    );
                }
                r
            })
        };
        let first = send(1);
        // Committed, not answered: the sync has not run.
        for _ in 0..500 {
            if committed.lock().unwrap().contains(&1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(committed.lock().unwrap().contains(&1));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!first.is_finished(), "answered before its sync");
        // The next write commits while the first one's sync is still waiting (pipelined).
        let second = send(2);
        for _ in 0..500 {
            if committed.lock().unwrap().contains(&2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            *committed.lock().unwrap(),
            vec![1, 2],
            "committed during the sync"
        );
        assert!(
            after.lock().unwrap().is_empty(),
            "nothing ran before a sync"
        );
        syncs.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok(2));
        assert_eq!(second.await.unwrap(), Ok(4));
        let ran = after.lock().unwrap().clone();
        assert_eq!(
            ran,
            vec![1, 2],
            "each batch's after-durable work, in commit order"
        );

        // A failed sync fails what it covered and every write after it; nothing more commits.
        *fail.lock().unwrap() = true;
        let third = send(3);
        syncs.add_permits(1);
        let e = third.await.unwrap().unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("disk on fire"), "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let e = send(4).await.unwrap().unwrap_err();
        assert!(e.to_string().contains("could not be synced"), "{e}");
        assert!(
            !committed.lock().unwrap().contains(&4),
            "committed after a failed sync"
        );
        assert_eq!(
            after.lock().unwrap().len(),
            2,
            "no after-durable work for a failed sync"
        );
        w.close_and_wait().await;
    }

    #[test]
    fn sqlx_errors_become_commit_errors_by_class() {
        let e = CommitError::from(sqlx::Error::PoolTimedOut);
        assert!(
            matches!(e, CommitError::Failed(StoreError::Unavailable(_))),
            "{e:?}"
        );
        let e = CommitError::from(sqlx::Error::Decode("bad".into()));
        assert!(
            matches!(e, CommitError::Failed(StoreError::Corrupt(_))),
            "{e:?}"
        );
        let e = CommitError::from(corrupt("x"));
        assert!(
            matches!(e, CommitError::Failed(StoreError::Corrupt(_))),
            "{e:?}"
        );
    }
}
