//! The delivery worker: claims due deliveries, runs their steps against destinations, records every try.
//!
//! The only part of renkei that talks to destinations. A delivery runs its steps in order; a step's
//! success is stored before the next one starts (so a retry resumes at the failed step, not at the first),
//! and a failure ends the run with a retry time or as dead, per the flow's policy. Semaphores cap concurrent
//! requests per http destination and per kintone domain.
//!
//! Claimed deliveries whose current step writes to the same kintone app with the same batchable action are
//! written together, up to 100 records per request (`kintone.rs`).
//!
//! One slow destination does not hold up the others. Per limit (destination, or kintone domain), the worker
//! counts the deliveries it holds that wait for that limit's answer (queued for a permit, or sent), and lets a
//! limit have at most its *room* of them: half the worker's slots when flows write to more than one limit (a
//! kintone domain written in batches: a batch's records, if more, up to three quarters of the slots), all of
//! them when to one. A limit whose room filled is *full* until a quarter of it is free again, and left out of
//! claims meanwhile (its deliveries stay queued, in order, and the claim goes on past them); what a claim
//! brought beyond a limit's room is given back untried at once, and so is a delivery whose next step goes to a
//! full limit. While a limit is full, a claim that came back short (it walked past all that limit's due
//! deliveries) is followed by ten times its duration without one, at most a second. Without this, a
//! destination that hangs would, claim after claim, end up holding every worker slot with deliveries waiting
//! for its permits. Two destinations that hang at once can still hold them all between them.
//!
//! [`Worker::run`] is the long-running loop; [`Worker::drain`] runs until nothing is due, which is how
//! tests make progress deterministically (with a manual clock deciding what "due" means).

mod kintone;
mod step;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use renkei_connectors::http::{HttpClient, Policy};
use renkei_core::config::{Destination, KintoneAction};
use renkei_core::types::Name;
use renkei_store::{Claimed, FlowStep, StoreError};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::app::App;
pub use step::event_view;

pub struct Worker {
    app: Arc<App>,
    owner: String,
    /// The client and the limits of the config revision they were made for; made again when it changes.
    tools: std::sync::Mutex<Arc<Tools>>,
    /// Deliveries this worker is running now: their leases are renewed while they run.
    /// (A count each: a delivery given back mid-run can be claimed and running again before its first run ends.)
    working: std::sync::Mutex<HashMap<i64, usize>>,
    /// Times a request waited for a slot another node held (a limit kept across nodes).
    slot_waits: std::sync::atomic::AtomicU64,
    /// Claims asked of the store.
    claims: std::sync::atomic::AtomicU64,
    /// Per limit key, the deliveries held here that wait for that limit's answer (see the module's notes).
    ahead: Arc<Waiting>,
}

struct Tools {
    revision: i64,
    client: HttpClient,
    /// `http:NAME` per http destination, `kintone:DOMAIN` per kintone domain: this node's semaphore, and the
    /// limit (kept across nodes in the store when it is shared).
    limits: HashMap<String, (Arc<Semaphore>, usize)>,
    /// Per limit key, how many deliveries may wait for its answers at once (see the module's notes).
    rooms: HashMap<String, usize>,
    /// Per flow, the limit key of each step (`None`: its destination is not in the config).
    step_keys: HashMap<String, Vec<Option<String>>>,
    /// Per limit, one taker of shared slots at a time on this node: requests take slots in the order they got
    /// this node's permits (a fair mutex), so a shared store does not shuffle them.
    slot_gates: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Tools {
    fn new(loaded: &renkei_core::config::Loaded, revision: i64) -> Tools {
        let mut limits: HashMap<String, (Arc<Semaphore>, usize)> = HashMap::new();
        for (name, d) in &loaded.config.destinations {
            let key = limit_key(name, d);
            // Several kintone destinations on one domain share the smallest of their limits.
            let n = match limits.get(&key) {
                Some((_, n)) => (*n).min(d.concurrency()),
                None => d.concurrency(),
            };
            limits.insert(key, (Arc::new(Semaphore::new(n)), n));
        }
        // A limit's room, for the limits flows write to: half the slots when they write to more than one; all of
        // them when to one, since there is nobody to keep room for (and claims stay as large as the slots free,
        // which a backlog's drain needs: capped at half, it ran 11% slower). A kintone domain written in
        // batches (kintone counts requests per day) has room for a whole batch, up to three quarters of the
        // slots.
        let mut used: HashMap<String, usize> = HashMap::new();
        let mut step_keys: HashMap<String, Vec<Option<String>>> = HashMap::new();
        for (flow, f) in &loaded.config.flows {
            let keys = step_keys.entry(flow.to_string()).or_default();
            for step in &f.steps {
                let Some((name, d)) = loaded.config.destinations.get_key_value(step.to.as_str()) else {
                    keys.push(None);
                    continue;
                };
                let key = limit_key(name, d);
                let batch = batching(d, step.action).map_or(0, |(_, max)| max);
                let most = used.entry(key.clone()).or_default();
                *most = (*most).max(batch);
                keys.push(Some(key));
            }
        }
        let slots = loaded.config.worker.concurrency;
        let share = if used.len() > 1 { slots.div_ceil(2) } else { slots };
        let rooms = used.into_iter().map(|(k, batch)| (k, share.max(batch.min(slots - slots / 4)))).collect();
        let client = HttpClient::new(Policy::from_network(&loaded.config.network));
        let slot_gates = limits.keys().map(|k| (k.clone(), Arc::default())).collect();
        Tools { revision, client, limits, rooms, step_keys, slot_gates }
    }

    /// The limit key of step `step` of flow `flow`.
    fn step_key(&self, flow: &str, step: usize) -> Option<&str> {
        self.step_keys.get(flow)?.get(step)?.as_deref()
    }
}

/// Per limit key, how many deliveries held here wait for its answers; `answered` rings as each is answered.
/// `full`: the limits left out of claims, from when their room filled until a quarter of it is free again (so a
/// slow limit at the head of the queue is not claimed for, and the rest given back, at each single answer).
#[derive(Default)]
struct Waiting {
    held: std::sync::Mutex<Held>,
    answered: tokio::sync::Notify,
}

#[derive(Default)]
struct Held {
    counts: HashMap<String, usize>,
    full: HashSet<String>,
}

impl Held {
    fn count(&self, key: &str) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

impl Waiting {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("waiting lock")
    }
}

/// A limit's share of the deliveries waiting for answers: `n` of them, given up when dropped.
pub(super) struct Ahead {
    waiting: Arc<Waiting>,
    key: String,
    n: usize,
}

impl Ahead {
    fn take(waiting: &Arc<Waiting>, held: &mut Held, key: &str, n: usize) -> Ahead {
        *held.counts.entry(key.to_owned()).or_default() += n;
        Ahead { waiting: waiting.clone(), key: key.to_owned(), n }
    }
}

/// What [`Worker::ahead_for`] did with a delivery's later step.
pub(super) enum LaterStep {
    /// Counted against its limit until dropped.
    Counted(Ahead),
    /// Its destination is not in the config: no limit to count against (the step fails on its own).
    Uncounted,
    /// Its limit is full: the delivery went back to the queue at this step.
    GivenBack,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(c) = self.waiting.held().counts.get_mut(&self.key) {
            *c = c.saturating_sub(self.n);
        }
        self.waiting.answered.notify_one();
    }
}

/// What the next claim may take: how many, and the steps it leaves out.
struct Plan {
    limit: usize,
    skip: Vec<FlowStep>,
}

/// Deliveries claimed together, as the worker runs them.
enum Work {
    One(Box<Claimed>),
    KintoneBatch { destination: Name, action: KintoneAction, group: Vec<Claimed> },
}

impl Work {
    /// How many deliveries.
    fn len(&self) -> usize {
        match self {
            Work::One(_) => 1,
            Work::KintoneBatch { group, .. } => group.len(),
        }
    }
}

impl Worker {
    pub fn new(app: Arc<App>) -> Worker {
        let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple());
        let tools = std::sync::Mutex::new(Arc::new(Tools::new(&app.loaded(), app.revision())));
        Worker {
            app,
            owner,
            tools,
            working: Default::default(),
            slot_waits: Default::default(),
            claims: Default::default(),
            ahead: Default::default(),
        }
    }

    /// The client and limits for the running config. A delivery already holding a permit of the previous
    /// revision's limits keeps it until it finishes, so for a moment after a reload a destination can see its
    /// old and new limit together.
    fn tools(&self) -> Arc<Tools> {
        let revision = self.app.revision();
        let mut tools = self.tools.lock().expect("worker tools lock");
        if tools.revision != revision {
            *tools = Arc::new(Tools::new(&self.app.loaded(), revision));
        }
        tools.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims one batch of due deliveries and runs them to the end of this try; returns how many ran (not those
    /// given back for want of room).
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, StoreError> {
        let plan = self.plan(self.app.loaded().config.worker.concurrency);
        let batch = self.claim(&plan).await?;
        let admitted = self.admit(batch).await;
        let n = admitted.iter().map(|(work, _)| work.len()).sum();
        let mut set = JoinSet::new();
        for (work, ahead) in admitted {
            let me = self.clone();
            set.spawn(async move { me.run_work(work, ahead).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Runs until nothing is due at the clock's current time.
    pub async fn drain(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn claim(&self, plan: &Plan) -> Result<Vec<Claimed>, StoreError> {
        let now = self.app.clock.now();
        let lease =
            chrono::Duration::from_std(self.app.loaded().config.worker.lease.0).unwrap_or(chrono::Duration::minutes(2));
        self.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.app.store.claim(&self.owner, now, now + lease, plan.limit, &plan.skip).await
    }

    /// The next claim, for `free` slots: no more than the limits have room for, and none of the steps whose
    /// limit is full. (A config without destinations has no limits: its deliveries, of flows removed since, fail at
    /// once.)
    fn plan(&self, free: usize) -> Plan {
        let tools = self.tools();
        let mut held = self.ahead.held();
        let Held { counts, full } = &mut *held;
        let count = |key: &str| counts.get(key).copied().unwrap_or(0);
        for (key, room) in &tools.rooms {
            if count(key) >= *room {
                full.insert(key.clone());
            } else if count(key) <= room - room.div_ceil(4) {
                full.remove(key);
            }
        }
        let room: usize =
            tools.rooms.iter().filter(|(k, _)| !full.contains(*k)).map(|(k, room)| room.saturating_sub(count(k))).sum();
        let mut skip = Vec::new();
        if !full.is_empty() {
            for (flow, keys) in &tools.step_keys {
                for (step, key) in keys.iter().enumerate() {
                    if key.as_ref().is_some_and(|k| full.contains(k)) {
                        skip.push(FlowStep { flow: flow.clone(), step: step as u32 });
                    }
                }
            }
        }
        Plan { limit: if tools.rooms.is_empty() { free } else { free.min(room) }, skip }
    }

    /// Counts the claimed work against its limits' rooms, in claim order; what does not fit is given back to the
    /// queue untried (it stays due, in order, and its limit is left out of claims until it has room).
    async fn admit(&self, claimed: Vec<Claimed>) -> Vec<(Work, Option<Ahead>)> {
        let tools = self.tools();
        let mut admitted = Vec::new();
        let mut back = Vec::new();
        for work in self.group(claimed) {
            let first = match &work {
                Work::One(c) => Some(&c.delivery),
                Work::KintoneBatch { group, .. } => group.first().map(|c| &c.delivery),
            };
            let key = first.and_then(|d| tools.step_key(&d.flow, d.step as usize));
            let Some((key, room)) = key.and_then(|k| tools.rooms.get(k).map(|r| (k, *r))) else {
                admitted.push((work, None));
                continue;
            };
            let mut held = self.ahead.held();
            let fits = room.saturating_sub(held.count(key));
            let work = match work {
                Work::One(c) if fits == 0 => {
                    back.push(c.delivery.id);
                    continue;
                }
                Work::KintoneBatch { destination, action, mut group } if group.len() > fits => {
                    back.extend(group.drain(fits..).map(|c| c.delivery.id));
                    match group.len() {
                        0 => continue,
                        1 => Work::One(Box::new(group.pop().expect("one"))),
                        _ => Work::KintoneBatch { destination, action, group },
                    }
                }
                work => work,
            };
            let n = work.len();
            let ahead = Ahead::take(&self.ahead, &mut held, key, n);
            admitted.push((work, Some(ahead)));
        }
        if !back.is_empty() {
            if let Err(e) = self.app.store.give_back(&self.owner, &back, self.app.clock.now()).await {
                tracing::warn!(error = %e, n = back.len(), "giving back deliveries failed; they run after their lease");
            }
        }
        admitted
    }

    /// Counts a delivery's later step against its limit while it waits for the answer. When that limit has no
    /// room the delivery is given back to the queue at this step (which claims leave out until the limit has
    /// room), instead of holding a slot while it waits.
    pub(super) async fn ahead_for(&self, id: i64, flow: &str, step: usize) -> LaterStep {
        let tools = self.tools();
        let Some(key) = tools.step_key(flow, step) else { return LaterStep::Uncounted };
        let room = tools.rooms.get(key).copied().unwrap_or(usize::MAX);
        {
            let mut held = self.ahead.held();
            if !held.full.contains(key) && held.count(key) < room {
                return LaterStep::Counted(Ahead::take(&self.ahead, &mut held, key, 1));
            }
        }
        if let Err(e) = self.app.store.give_back(&self.owner, &[id], self.app.clock.now()).await {
            tracing::warn!(delivery = id, error = %e, "giving back a delivery failed; it runs after its lease");
        }
        LaterStep::GivenBack
    }

    /// Splits a claim into single deliveries and kintone batches.
    fn group(&self, claimed: Vec<Claimed>) -> Vec<Work> {
        let cfg = &self.app.loaded().config;
        let mut batches: HashMap<(Name, KintoneAction), Vec<Claimed>> = HashMap::new();
        let mut out = Vec::new();
        for c in claimed {
            let batchable =
                cfg.flows.get(c.delivery.flow.as_str()).and_then(|f| f.steps.get(c.delivery.step as usize)).and_then(
                    |step| {
                        let (action, _) = batching(cfg.destinations.get(step.to.as_str())?, step.action)?;
                        Some((step.to.clone(), action))
                    },
                );
            match batchable {
                Some(key) => batches.entry(key).or_default().push(c),
                None => out.push(Work::One(Box::new(c))),
            }
        }
        for ((destination, action), mut group) in batches {
            if group.len() == 1 {
                out.push(Work::One(Box::new(group.pop().expect("one"))));
            } else {
                out.push(Work::KintoneBatch { destination, action, group });
            }
        }
        out
    }

    async fn run_work(self: Arc<Self>, work: Work, ahead: Option<Ahead>) {
        let ids: Vec<i64> = match &work {
            Work::One(c) => vec![c.delivery.id],
            Work::KintoneBatch { group, .. } => group.iter().map(|c| c.delivery.id).collect(),
        };
        {
            let mut working = self.working.lock().expect("working lock");
            for id in &ids {
                *working.entry(*id).or_default() += 1;
            }
        }
        // Removed however the work ends (an abort at the end of the shutdown grace included).
        struct Done<'a>(&'a Worker, Vec<i64>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut working = self.0.working.lock().expect("working lock");
                for id in &self.1 {
                    if let Some(n) = working.get_mut(id) {
                        *n -= 1;
                        if *n == 0 {
                            working.remove(id);
                        }
                    }
                }
            }
        }
        let _done = Done(&self, ids);
        match work {
            Work::One(c) => self.deliver(*c, None, ahead).await,
            Work::KintoneBatch { destination, action, group } => {
                self.deliver_batch(&destination, action, group, ahead).await
            }
        }
    }

    /// The worker loop: keeps up to `worker.concurrency` deliveries running, sleeps when nothing is due,
    /// and on `shutdown` stops claiming, lets running deliveries finish for `worker.shutdown_grace`, then
    /// releases the rest so the next start (or another node) takes them at once. While claiming fails (the store
    /// is away) it waits longer each time ([`claim_backoff`]) and resumes by itself once a claim succeeds.
    /// Extends the leases of the deliveries this worker is running by a lease from now, so one that runs
    /// longer than a lease (a slow destination, several steps) is not taken over by another worker while this
    /// one lives. [`Worker::run`] calls it every third of a lease; returns how many leases were renewed.
    pub async fn renew_leases(&self) -> Result<u64, StoreError> {
        let ids: Vec<i64> = self.working.lock().expect("working lock").keys().copied().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let now = self.app.clock.now();
        let lease =
            chrono::Duration::from_std(self.app.loaded().config.worker.lease.0).unwrap_or(chrono::Duration::minutes(2));
        self.app.store.renew_leases(&self.owner, &ids, now + lease).await
    }

    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let renewer = {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let every = (me.app.loaded().config.worker.lease.0 / 3).max(Duration::from_millis(100));
                    tokio::time::sleep(every).await;
                    if let Err(e) = me.renew_leases().await {
                        tracing::warn!(error = %e, "renewing leases failed; will try again");
                    }
                }
            })
        };
        let _stop_renewing = AbortOnDrop(renewer);
        let cfg = &self.app.loaded().config.worker;
        let gather = self.gathering_window();
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let mut running = JoinSet::new();
        // Claims failed in a row: the store is away (see `claim_backoff`).
        let mut failures = 0u32;
        // No claim before this while a limit is full (see below).
        let mut spaced_until: Option<std::time::Instant> = None;
        tokio::pin!(shutdown);
        loop {
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            let plan = self.plan(free);
            // While a limit is full its due deliveries are walked past by each claim, which costs as many rows
            // as it has due: claims are spaced to take a tenth of the time at most.
            let spaced = !plan.skip.is_empty() && spaced_until.is_some_and(|t| std::time::Instant::now() < t);
            let mut claimed = 0;
            if plan.limit > 0 && !spaced {
                let started = std::time::Instant::now();
                let result = self.claim(&plan).await;
                // A claim that came back short with a limit left out walked past all of its due deliveries.
                if result.as_ref().is_ok_and(|b| b.len() < plan.limit) && !plan.skip.is_empty() {
                    let spacing = (started.elapsed() * CLAIM_SPACING).min(MAX_CLAIM_SPACING.min(cfg.poll.0));
                    spaced_until = Some(std::time::Instant::now() + spacing);
                }
                match result {
                    Ok(batch) => {
                        if failures > 0 {
                            tracing::info!(failures, "claiming works again; the worker resumes");
                            failures = 0;
                        }
                        claimed = batch.len();
                        for (work, ahead) in self.admit(batch).await {
                            let n = work.len() as u32;
                            let permit = slots.clone().acquire_many_owned(n).await.expect("semaphore is never closed");
                            let me = self.clone();
                            running.spawn(async move {
                                me.run_work(work, ahead).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        let retry_in = claim_backoff(cfg.poll.0, failures);
                        tracing::warn!(error = %e, failures, ?retry_in, "claiming deliveries failed; will try again");
                    }
                }
            }
            if plan.limit > 0 && !spaced && claimed == plan.limit {
                continue; // more may be due
            }
            let idle = if failures > 0 {
                claim_backoff(cfg.poll.0, failures)
            } else if plan.limit == 0 {
                // Every slot busy, or every limit full: the next thing to do is when a delivery finishes or is
                // answered (below), not when something is due.
                cfg.poll.0
            } else if spaced {
                spaced_until.map(|t| t.saturating_duration_since(std::time::Instant::now())).unwrap_or_default()
            } else {
                // Due now but not claimed (a full limit's deliveries, or an ordering key's next while its head is
                // in flight): not worth looking again at once; a delivery answered or finishing (below) makes
                // room sooner.
                match self.idle_wait(cfg.poll.0).await {
                    wait if wait.is_zero() => UNCLAIMABLE_WAIT.min(cfg.poll.0),
                    wait => wait,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.app.wake.notified() => {
                    // New events: let more of a burst arrive, so kintone writes go out in full batches.
                    if !gather.is_zero() {
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(gather) => {}
                        }
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = self.ahead.answered.notified(), if !plan.skip.is_empty() || plan.limit == 0 => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        let grace = tokio::time::sleep(cfg.shutdown_grace.0);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    running.abort_all();
                    break;
                }
            }
        }
        match self.app.store.release(&self.owner, self.app.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released unfinished deliveries"),
            Err(e) => tracing::warn!(error = %e, "releasing deliveries failed; their leases will expire"),
        }
    }

    /// The shortest batching window of the kintone destinations that batch (zero when none does).
    fn gathering_window(&self) -> Duration {
        self.app
            .loaded()
            .config
            .destinations
            .values()
            .filter_map(|d| match d {
                Destination::Kintone(k) if k.batch.enabled => Some(k.batch.window.0),
                _ => None,
            })
            .min()
            .unwrap_or(Duration::ZERO)
    }

    /// How long to sleep when idle: until the next retry is due, at most `poll`.
    async fn idle_wait(&self, poll: Duration) -> Duration {
        match self.app.store.next_due().await {
            Ok(Some(at)) => (at - self.app.clock.now()).to_std().unwrap_or(Duration::ZERO).min(poll),
            _ => poll,
        }
    }

    /// The limit a destination's requests count against: its key, this node's semaphore, and how many at once.
    fn limit(&self, destination: &str) -> Option<(String, Arc<Semaphore>, usize)> {
        let loaded = self.app.loaded();
        let d = loaded.config.destinations.get(destination)?;
        let name = Name::parse(destination).ok()?;
        let key = limit_key(&name, d);
        let (sem, n) = self.tools().limits.get(&key).cloned()?;
        Some((key, sem, n))
    }

    /// How many times a request waited for a slot another node held.
    pub fn slot_waits(&self) -> u64 {
        self.slot_waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many claims this worker has asked the store for.
    pub fn claims(&self) -> u64 {
        self.claims.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// On a store several nodes share, one of the `cap` slots of `key`, waited for while other nodes hold them
    /// all; held until the request's timeout at most (a node that dies mid-request frees it then). A store that
    /// cannot answer is not waited for: this node's own limit still holds, and the request's record will fail
    /// with the same store anyway.
    async fn shared_slot(&self, key: &str, cap: usize, timeout: Duration) -> Option<u32> {
        let gate = self.tools().slot_gates.get(key).cloned().unwrap_or_default();
        let _one_taker = gate.lock().await;
        let mut wait = Duration::from_millis(10);
        loop {
            let now = self.app.clock.now();
            let hold =
                chrono::Duration::from_std(timeout + Duration::from_secs(10)).unwrap_or(chrono::Duration::minutes(1));
            match self.app.store.take_slot(key, cap as u32, &self.owner, now, now + hold).await {
                Ok(Some(slot)) => return Some(slot),
                Ok(None) => {
                    self.slot_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "taking a shared concurrency slot failed; sending within this node's limit");
                    return None;
                }
            }
        }
    }
}

/// Stops a task when dropped (the lease renewer ends with the worker loop, however it ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// While some limit is full, a claim that came back short is followed by at least this many times its own
/// duration without one, up to [`MAX_CLAIM_SPACING`] (or `poll`).
const CLAIM_SPACING: u32 = 10;
const MAX_CLAIM_SPACING: Duration = Duration::from_secs(1);

/// How long an idle worker waits when something is due that its claim did not take (unless `poll` is shorter):
/// a full limit's deliveries, or an ordering key's next while its head is in flight. It would otherwise claim
/// again at once, and find nothing, until then.
const UNCLAIMABLE_WAIT: Duration = Duration::from_millis(100);

/// The longest a worker waits between claims while the store keeps failing (unless `poll` is longer).
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(5);

/// How long to wait after `failures` failed claims in a row: `poll` (at least 100 ms), doubled with each further
/// failure, up to [`MAX_CLAIM_BACKOFF`]. A store that fails fast (a pooler in front of a stopped database
/// resets connections at once) would otherwise be asked, and a warning logged, every `poll`; the cap bounds how
/// late the worker notices the store is back (an ingest that succeeds wakes it at once).
fn claim_backoff(poll: Duration, failures: u32) -> Duration {
    let first = poll.max(Duration::from_millis(100));
    first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_CLAIM_BACKOFF.max(poll))
}

/// Whether a step's writes to `d` go out in kintone batches: the action, and the batch's records at most.
fn batching(d: &Destination, action: Option<KintoneAction>) -> Option<(KintoneAction, usize)> {
    match (d, action) {
        (Destination::Kintone(k), Some(action)) if k.batch.enabled && action.batches() => Some((action, k.batch.max)),
        _ => None,
    }
}

fn limit_key(name: &Name, d: &Destination) -> String {
    match d {
        Destination::Http(_) => format!("http:{name}"),
        Destination::Kintone(k) => format!("kintone:{}", k.domain()),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "renkei".to_owned())
}
