//! The scheduling policy renkei's threads run under: Linux's `SCHED_BATCH`, set on the main thread before any other
//! thread starts, so every thread the process makes (the runtime's workers, the SQLite writer, sqlx's SQLite
//! threads) inherits it.
//!
//! Why: a write is a conversation between two threads, the writer and sqlx's SQLite thread, by way of a channel
//! whose sender wakes the receiver while it still holds the channel's lock. Under the default policy the woken
//! thread preempts the sender on the same core, finds the lock taken, and sleeps again on a futex: two context
//! switches for nothing, many times per transaction. `perf record -e sched:sched_switch` at 100 events/s put a
//! fifth of all switches at the SQLite thread preempted inside the channel's send, and a tenth at the writer
//! waiting for the lock that thread held. `SCHED_BATCH` is the ordinary time-sharing policy (same nice value,
//! same share of the CPU, no privilege needed) without wake-up preemption: a woken thread runs on an idle core, or
//! when the running one blocks or its slice ends. Measured (BENCHMARKS.md, "Thirteenth session"): context switches
//! per event at 100/s 128 → 56, hub CPU per 1,000 events about a fifth less, latency no worse at 100/s or 1,000/s.
//!
//! `RENKEI_SCHED_BATCH=0` leaves the policy the process was started with.

/// The environment variable that turns the policy off (`0`, `false`, `no`, `off`).
pub const ENV: &str = "RENKEI_SCHED_BATCH";

/// What [`prefer_throughput`] did, for the log once it is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The calling thread (and so every thread it starts from now on) runs under `SCHED_BATCH`.
    Batch,
    /// Left as it was: turned off by [`ENV`], or not Linux.
    Unchanged,
    /// The kernel refused; the policy is as it was. Why, in words.
    Failed(String),
}

/// Puts the calling thread under `SCHED_BATCH`, keeping its nice value. Call it first thing in `main`, before a
/// runtime or any other thread is started: threads inherit the policy of the thread that makes them.
pub fn prefer_throughput() -> Outcome {
    let outcome = if turned_off(std::env::var(ENV).ok().as_deref()) { Outcome::Unchanged } else { imp::batch() };
    let _ = OUTCOME.set(outcome.clone());
    outcome
}

/// What the process's [`prefer_throughput`] did, if it was called.
pub fn outcome() -> Option<&'static Outcome> {
    OUTCOME.get()
}

static OUTCOME: std::sync::OnceLock<Outcome> = std::sync::OnceLock::new();

fn turned_off(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off"))
}

#[cfg(target_os = "linux")]
mod imp {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};

    use super::Outcome;

    const BATCH: ThreadSchedulePolicy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);

    pub(super) fn batch() -> Outcome {
        // The crate sets a normal policy's nice value in the same call, from a 0-99 scale; the value on that scale
        // that maps to the thread's nice value now keeps it (lowering it would need privilege, raising it would
        // slow renkei down for no reason).
        let nice = match current_nice() {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(e),
        };
        let Some(priority) = (0..=99u8)
            .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
            .map(ThreadPriority::Crossplatform)
            .find(|p| p.to_posix(BATCH).is_ok_and(|n| n == nice))
        else {
            return Outcome::Failed(format!("nice value {nice} has no equivalent"));
        };
        match set_thread_priority_and_policy(thread_native_id(), priority, BATCH) {
            Ok(()) => Outcome::Batch,
            Err(e) => Outcome::Failed(format!("{e:?}")),
        }
    }

    /// The calling thread's nice value, field 19 of `/proc/thread-self/stat` (after the parenthesised name, which
    /// may itself hold spaces and parentheses).
    fn current_nice() -> Result<i32, String> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat")
            .map_err(|e| format!("cannot read /proc/thread-self/stat: {e}"))?;
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        // Fields from the third (state) on; the nice value is the 19th field of the line.
        after_name
            .split_whitespace()
            .nth(19 - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| "no nice value in /proc/thread-self/stat".to_owned())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn batch() -> super::Outcome {
        super::Outcome::Unchanged
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The policy of a thread, field 41 of its `/proc/.../stat` (3 = `SCHED_BATCH`, 0 = `SCHED_OTHER`).
    fn policy_of(stat: &str) -> u32 {
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace().nth(41 - 3).unwrap().parse().unwrap()
    }

    fn nice_of(stat: &str) -> i32 {
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace().nth(19 - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn the_variable_turns_it_off_only_when_it_says_so() {
        for off in ["0", "false", "No", " off "] {
            assert!(turned_off(Some(off)), "{off:?}");
        }
        for on in [None, Some("1"), Some("yes"), Some("")] {
            assert!(!turned_off(on), "{on:?}");
        }
    }

    #[test]
    fn a_thread_and_the_threads_it_starts_run_batch_at_the_same_nice_value() {
        // On a thread of its own, so the test harness's threads keep their policy.
        std::thread::spawn(|| {
            let before = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            assert_eq!(prefer_throughput(), Outcome::Batch);
            let after = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            assert_eq!(policy_of(&after), 3, "SCHED_BATCH");
            assert_eq!(nice_of(&after), nice_of(&before), "nice value kept");
            let child =
                std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/stat").unwrap()).join().unwrap();
            assert_eq!(policy_of(&child), 3, "inherited by a thread started afterwards");
        })
        .join()
        .unwrap();
    }
}
