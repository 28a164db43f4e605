//! The conformance suite every [`Store`] must pass: state transitions, priorities, delays,
//! leases and stalled-job recovery, retries with backoff, unique keys, pause and cancel.
//!
//! A backend's test calls [`run_all`] with a function that opens a fresh, empty store for the
//! numbered case, reading time from the given clock. Time only moves when the suite advances
//! the mock clock.

use std::future::Future;
use std::time::Duration;

use keel_core::{Clock, MockClock};
use serde_json::json;

use crate::QueueError;
use crate::model::{Backoff, BackoffKind, JobState, NewJob, QueueLimits, RateLimit};
use crate::schedule::{NewSchedule, Repeat};
use crate::store::{Failure, JobFilter, Retention, Store};

const LEASE: Duration = Duration::from_secs(30);

fn job(name: &str) -> NewJob {
    NewJob::new(name, json!({"n": name}))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs every case against a fresh store from `open`, which gets the case's number (0 to
/// [`CASES`] − 1, for a key prefix or a file name of its own) and the clock to read.
pub async fn run_all<S, F>(open: F)
where
    S: Store,
    F: Fn(usize, Clock) -> S,
{
    let opened = std::cell::Cell::new(0);
    let open = |clock| {
        let case = opened.get();
        opened.set(case + 1);
        open(case, clock)
    };
    run(&open, priorities_then_fifo).await;
    run(&open, delayed_jobs_wait_for_their_time).await;
    run(&open, completion_needs_the_current_lease).await;
    run(&open, failures_retry_with_backoff_then_fail).await;
    run(&open, failures_without_retry_fail_at_once).await;
    run(
        &open,
        expired_leases_are_recovered_then_failed_after_max_stalls,
    )
    .await;
    run(&open, unique_keys_dedupe_while_a_job_is_live).await;
    run(&open, paused_queues_hand_out_nothing).await;
    run(&open, the_overview_lists_queues_with_counts_and_pauses).await;
    run(
        &open,
        cancel_is_immediate_when_waiting_and_flagged_when_active,
    )
    .await;
    run(&open, bulk_adds_are_all_or_nothing).await;
    run(&open, retention_keeps_the_newest_finished_jobs).await;
    run(&open, progress_promote_and_retry).await;
    run(&open, listings_page_newest_first_with_filters_and_search).await;
    run(&open, clean_and_retry_failed_act_on_one_queue).await;
    run(&open, groups_take_turns).await;
    run(&open, the_concurrency_cap_counts_active_jobs).await;
    run(&open, rate_limits_hold_for_the_queue_and_each_group).await;
    run(&open, schedules_add_one_job_per_tick).await;
    run(&open, deleting_a_queue_drains_it_in_batches).await;
    run(&open, attempts_that_outlive_their_timeout_fail).await;
    run(&open, queues_can_keep_more_or_less_than_the_default).await;
    assert_eq!(opened.get(), CASES, "every case ran on a store of its own");
}

/// The number of cases [`run_all`] runs (each on a store of its own).
pub const CASES: usize = 22;

async fn run<S, F, C, Fut>(open: &F, case: C)
where
    S: Store,
    F: Fn(Clock) -> S,
    C: FnOnce(S, MockClock) -> Fut,
    Fut: Future<Output = ()>,
{
    let (clock, time) = Clock::mock();
    case(open(clock), time).await;
}

async fn names<S: Store>(store: &S, queue: &str, max: usize) -> Vec<String> {
    store
        .fetch(queue, "w", max, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.job.name)
        .collect()
}

/// Lower priority numbers first; FIFO within a priority; queues are separate.
pub async fn priorities_then_fifo<S: Store>(store: S, _: MockClock) {
    let mut urgent = job("urgent");
    urgent.options.priority = -5;
    let mut low = job("low");
    low.options.priority = 10;
    store
        .add("q", vec![job("a"), low, job("b"), urgent, job("c")])
        .await
        .unwrap();
    store.add("other", vec![job("x")]).await.unwrap();
    assert_eq!(names(&store, "q", 2).await, ["urgent", "a"]);
    assert_eq!(names(&store, "q", 10).await, ["b", "c", "low"]);
    assert!(names(&store, "q", 10).await.is_empty());
    assert_eq!(names(&store, "other", 10).await, ["x"]);
}

fn grouped(name: &str, group: Option<&str>) -> NewJob {
    let mut job = job(name);
    job.options.group = group.map(str::to_owned);
    job
}

/// Within a priority, groups take turns: a group that adds jobs after another's long backlog
/// runs next, then alternates with it.
pub async fn groups_take_turns<S: Store>(store: S, _: MockClock) {
    let backlog = (1..=4).map(|i| grouped(&format!("a{i}"), Some("a")));
    store.add("q", backlog.collect()).await.unwrap();
    assert_eq!(names(&store, "q", 2).await, ["a1", "a2"]);
    let late = vec![grouped("b1", Some("b")), grouped("b2", Some("b"))];
    store.add("q", late).await.unwrap();
    assert_eq!(names(&store, "q", 10).await, ["b1", "a3", "b2", "a4"]);
    // Jobs without a group are one group of their own.
    let mixed = vec![
        grouped("c1", Some("c")),
        grouped("c2", Some("c")),
        grouped("n1", None),
        grouped("n2", None),
    ];
    store.add("q", mixed).await.unwrap();
    assert_eq!(names(&store, "q", 10).await, ["c1", "n1", "c2", "n2"]);
}

/// With a concurrency cap, a fetch hands out no more than the cap minus the active jobs.
pub async fn the_concurrency_cap_counts_active_jobs<S: Store>(store: S, _: MockClock) {
    let limits = QueueLimits {
        concurrency: Some(2),
        ..QueueLimits::default()
    };
    store.set_limits("q", limits).await.unwrap();
    let jobs = (0..5).map(|i| job(&format!("j{i}"))).collect();
    store.add("q", jobs).await.unwrap();
    let first = store.fetch("q", "w", 10, LEASE).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(names(&store, "q", 10).await.is_empty(), "at the cap");
    store
        .complete(&first[0].job.id, &first[0].token, json!(null))
        .await
        .unwrap();
    assert_eq!(names(&store, "q", 10).await, ["j2"]);
    store.set_limits("q", QueueLimits::default()).await.unwrap();
    assert_eq!(names(&store, "q", 10).await, ["j3", "j4"], "limits lifted");
}

/// A queue rate limit holds in any window (sliding), and a group limit holds per group;
/// jobs without a group are not held back by the group limit.
pub async fn rate_limits_hold_for_the_queue_and_each_group<S: Store>(store: S, time: MockClock) {
    let per_second = |max| {
        Some(RateLimit {
            max,
            per: keel_core::HumanDuration::from_secs(1),
        })
    };
    let limits = QueueLimits {
        rate: per_second(3),
        group_rate: per_second(1),
        ..QueueLimits::default()
    };
    store.set_limits("q", limits).await.unwrap();
    let jobs = vec![
        grouped("a1", Some("a")),
        grouped("a2", Some("a")),
        grouped("a3", Some("a")),
        grouped("n1", None),
        grouped("n2", None),
        grouped("n3", None),
        grouped("b1", Some("b")),
    ];
    store.add("q", jobs).await.unwrap();
    // Turn 0: a1, n1, b1 — the queue's 3 per second.
    assert_eq!(names(&store, "q", 10).await, ["a1", "n1", "b1"]);
    time.advance(Duration::from_millis(999));
    assert!(
        names(&store, "q", 10).await.is_empty(),
        "the window is full"
    );
    time.advance(Duration::from_millis(1));
    // A new window: a2 (group a again has room), n2, then n3 (a3 waits for a's window).
    assert_eq!(names(&store, "q", 10).await, ["a2", "n2", "n3"]);
    time.advance(secs(1));
    assert_eq!(names(&store, "q", 10).await, ["a3"]);
}

/// A schedule adds exactly one job per tick however often it is fired, one job for many
/// missed ticks, and none once deleted; a bad expression is refused naming the field.
pub async fn schedules_add_one_job_per_tick<S: Store>(store: S, time: MockClock) {
    let every_minute = NewSchedule {
        name: "digest".into(),
        repeat: Repeat::Every { every_ms: 60_000 },
        payload: json!({"kind": "daily"}),
        attempts: 2,
    };
    let created = store.put_schedule("q", every_minute.clone()).await.unwrap();
    assert_eq!(
        created.next_run_at,
        Some(created.created_at + 60_000),
        "the first tick is one interval after creation"
    );
    assert!(store.fire_schedules().await.unwrap().is_empty(), "not yet");
    time.advance(secs(60));
    assert_eq!(store.fire_schedules().await.unwrap(), ["q"]);
    assert!(
        store.fire_schedules().await.unwrap().is_empty(),
        "once per tick"
    );
    let jobs = store.fetch("q", "w", 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.name, "digest");
    assert_eq!(jobs[0].job.payload, json!({"kind": "daily"}));
    assert_eq!(jobs[0].job.max_attempts, 2);

    // Five ticks missed: one job, and the next tick is the one after now.
    time.advance(secs(5 * 60 + 30));
    assert_eq!(store.fire_schedules().await.unwrap(), ["q"]);
    assert_eq!(names(&store, "q", 10).await, ["digest"]);
    let listed = store.schedules("q").await.unwrap();
    assert_eq!(
        listed[0].next_run_at,
        Some(created.created_at + 7 * 60_000),
        "ticks stay on the schedule's grid"
    );
    // Replacing it with the same timing keeps the grid; deleting stops it.
    let renamed = NewSchedule {
        payload: json!({"kind": "weekly"}),
        ..every_minute
    };
    let replaced = store.put_schedule("q", renamed).await.unwrap();
    assert_eq!(replaced.next_run_at, listed[0].next_run_at);
    assert!(store.delete_schedule("q", "digest").await.unwrap());
    assert!(!store.delete_schedule("q", "digest").await.unwrap());
    time.advance(secs(3600));
    assert!(store.fire_schedules().await.unwrap().is_empty());

    let bad = NewSchedule {
        name: "bad".into(),
        repeat: Repeat::Cron {
            expr: "*/5 * * *".into(),
            timezone: "UTC".into(),
        },
        payload: json!(null),
        attempts: 1,
    };
    let refused = store.put_schedule("q", bad).await;
    assert!(
        matches!(&refused, Err(QueueError::Invalid { field, .. }) if field == "cron"),
        "{refused:?}"
    );
    assert!(store.schedules("q").await.unwrap().is_empty());
}

/// A queue is known once it has a job, a schedule or a pause flag; deleting it removes all
/// of that in batches and leaves other queues alone.
pub async fn deleting_a_queue_drains_it_in_batches<S: Store>(store: S, _: MockClock) {
    assert!(!store.queue_exists("q").await.unwrap());
    let jobs = (0..5).map(|i| job(&format!("j{i}"))).collect();
    store.add("q", jobs).await.unwrap();
    store.add("other", vec![job("keep")]).await.unwrap();
    let active = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    let hourly = NewSchedule {
        name: "hourly".into(),
        repeat: Repeat::Every {
            every_ms: 3_600_000,
        },
        payload: json!(null),
        attempts: 1,
    };
    store.put_schedule("q", hourly).await.unwrap();
    store.set_paused("q", true).await.unwrap();
    assert!(store.queue_exists("q").await.unwrap());

    assert_eq!(store.delete_queue("q", 2).await.unwrap(), 2);
    assert!(store.queue_exists("q").await.unwrap(), "not drained yet");
    assert_eq!(store.delete_queue("q", 2).await.unwrap(), 2);
    assert_eq!(store.delete_queue("q", 2).await.unwrap(), 1);
    assert!(!store.queue_exists("q").await.unwrap());
    assert!(store.schedules("q").await.unwrap().is_empty());
    let late = store
        .complete(&active.job.id, &active.token, json!(1))
        .await;
    assert!(matches!(late, Err(QueueError::NoJob(_))), "{late:?}");
    assert_eq!(names(&store, "other", 10).await, ["keep"]);
}

/// An attempt that runs past its job's timeout fails even though its lease was renewed: it is
/// retried while attempts remain, then fails for good.
pub async fn attempts_that_outlive_their_timeout_fail<S: Store>(store: S, time: MockClock) {
    let mut slow = job("slow");
    slow.options.timeout_ms = Some(10_000);
    slow.options.attempts = 2;
    slow.options.backoff = Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 1_000,
        max_delay_ms: None,
        jitter: 0.0,
    };
    let id = store.add("q", vec![slow]).await.unwrap().remove(0);
    for attempt in 1..=2 {
        let fetched = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
        store.extend(&id, &fetched.token, secs(3600)).await.unwrap();
        time.advance(Duration::from_millis(9_999));
        store.recover_stalled(1).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().state,
            JobState::Active
        );
        time.advance(Duration::from_millis(1));
        store.recover_stalled(1).await.unwrap();
        let job = store.get(&id).await.unwrap().unwrap();
        assert_eq!(job.errors.len(), attempt);
        assert!(
            job.errors[attempt - 1].starts_with("timed out"),
            "{:?}",
            job.errors
        );
        if attempt == 1 {
            assert_eq!(job.state, JobState::Delayed, "retried after the backoff");
            time.advance(secs(1));
        } else {
            assert_eq!(job.state, JobState::Failed, "out of attempts");
        }
        let late = store.complete(&id, &fetched.token, json!(1)).await;
        assert!(matches!(late, Err(QueueError::Conflict { .. })), "{late:?}");
    }
}

/// A delayed job is not handed out before its time, and is at its time.
pub async fn delayed_jobs_wait_for_their_time<S: Store>(store: S, time: MockClock) {
    let mut later = job("later");
    later.options.delay_ms = 5_000;
    let ids = store.add("q", vec![later]).await.unwrap();
    assert_eq!(
        store.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Delayed
    );
    assert!(names(&store, "q", 1).await.is_empty());
    time.advance(Duration::from_millis(4_999));
    assert!(names(&store, "q", 1).await.is_empty());
    time.advance(Duration::from_millis(1));
    assert_eq!(names(&store, "q", 1).await, ["later"]);
}

/// Complete and fail need the current lease; a wrong or expired token changes nothing.
pub async fn completion_needs_the_current_lease<S: Store>(store: S, time: MockClock) {
    store.add("q", vec![job("a")]).await.unwrap();
    let fetched = store.fetch("q", "w1", 1, LEASE).await.unwrap().remove(0);
    let id = fetched.job.id.clone();
    assert_eq!(fetched.job.state, JobState::Active);
    assert_eq!(fetched.job.attempts_made, 1);
    let wrong = store.complete(&id, "not-the-token", json!(1)).await;
    assert!(
        matches!(wrong, Err(QueueError::Conflict { .. })),
        "{wrong:?}"
    );
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().state,
        JobState::Active
    );
    let extended = store.extend(&id, &fetched.token, secs(60)).await.unwrap();
    assert!(extended > fetched.lease_expires_at);
    time.advance(secs(59));
    store
        .complete(&id, &fetched.token, json!({"ok": true}))
        .await
        .unwrap();
    let done = store.get(&id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert!(done.finished_at.is_some());
    let again = store.complete(&id, &fetched.token, json!(2)).await;
    assert!(
        matches!(again, Err(QueueError::Conflict { .. })),
        "{again:?}"
    );
    assert!(matches!(
        store.complete("no-such-job", "t", json!(1)).await,
        Err(QueueError::NoJob(_))
    ));

    // An expired lease no longer completes.
    store.add("q", vec![job("b")]).await.unwrap();
    let b = store.fetch("q", "w1", 1, LEASE).await.unwrap().remove(0);
    time.advance(LEASE);
    let late = store.complete(&b.job.id, &b.token, json!(1)).await;
    assert!(matches!(late, Err(QueueError::Conflict { .. })), "{late:?}");
}

/// A failed attempt is retried after its backoff until attempts run out; every error is kept.
pub async fn failures_retry_with_backoff_then_fail<S: Store>(store: S, time: MockClock) {
    let mut flaky = job("flaky");
    flaky.options.attempts = 3;
    flaky.options.backoff = Backoff {
        kind: BackoffKind::Exponential,
        delay_ms: 1_000,
        max_delay_ms: None,
        jitter: 0.0,
    };
    let id = store.add("q", vec![flaky]).await.unwrap().remove(0);
    for (attempt, wait_ms) in [(1u32, 1_000u64), (2, 2_000)] {
        let f = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
        assert_eq!(f.job.attempts_made, attempt);
        let failure = Failure::retry(format!("boom {attempt}"));
        let state = store.fail(&id, &f.token, failure).await.unwrap().state;
        assert_eq!(state, JobState::Delayed);
        time.advance(Duration::from_millis(wait_ms - 1));
        assert!(names(&store, "q", 1).await.is_empty(), "backoff not over");
        time.advance(Duration::from_millis(1));
    }
    let f = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(f.job.attempts_made, 3);
    let failure = Failure::retry("boom 3");
    assert_eq!(
        store.fail(&id, &f.token, failure).await.unwrap().state,
        JobState::Failed
    );
    let failed = store.get(&id).await.unwrap().unwrap();
    assert_eq!(failed.errors, ["boom 1", "boom 2", "boom 3"]);
    assert!(names(&store, "q", 1).await.is_empty());
}

/// `retry: false` fails the job whatever attempts remain.
pub async fn failures_without_retry_fail_at_once<S: Store>(store: S, _: MockClock) {
    let id = store.add("q", vec![job("a")]).await.unwrap().remove(0);
    let f = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    let failure = Failure::no_retry("bad input");
    assert_eq!(
        store.fail(&id, &f.token, failure).await.unwrap().state,
        JobState::Failed
    );
}

/// A job whose lease expires goes back to waiting with the attempt counted, and fails once it
/// has stalled more than `max_stalls` times; the history says so.
pub async fn expired_leases_are_recovered_then_failed_after_max_stalls<S: Store>(
    store: S,
    time: MockClock,
) {
    let id = store.add("q", vec![job("a")]).await.unwrap().remove(0);
    store.fetch("q", "dead-worker", 1, LEASE).await.unwrap();
    assert_eq!(
        store.recover_stalled(1).await.unwrap(),
        0,
        "lease still valid"
    );
    time.advance(LEASE);
    assert_eq!(store.recover_stalled(1).await.unwrap(), 1);
    let job = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts_made, job.stalls),
        (JobState::Waiting, 1, 1)
    );
    assert!(job.errors[0].contains("dead-worker"), "{:?}", job.errors);
    let second = store.fetch("q", "w2", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(second.job.attempts_made, 2);
    time.advance(LEASE);
    assert_eq!(store.recover_stalled(1).await.unwrap(), 1);
    let job = store.get(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.stalls), (JobState::Failed, 2));
}

/// While a job with a unique key is waiting, delayed or active, adding another returns its id;
/// once it finished, a new job is added.
pub async fn unique_keys_dedupe_while_a_job_is_live<S: Store>(store: S, _: MockClock) {
    let keyed = || {
        let mut j = job("sync");
        j.options.unique_key = Some("user:7".into());
        j
    };
    let first = store.add("q", vec![keyed(), keyed()]).await.unwrap();
    assert_eq!(first[0], first[1]);
    let f = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        store.add("q", vec![keyed()]).await.unwrap(),
        [first[0].clone()]
    );
    assert_ne!(
        store.add("other", vec![keyed()]).await.unwrap(),
        [first[0].clone()]
    );
    store
        .complete(&f.job.id, &f.token, json!(null))
        .await
        .unwrap();
    assert_ne!(
        store.add("q", vec![keyed()]).await.unwrap(),
        [first[0].clone()]
    );
}

/// A paused queue accepts adds and hands out nothing; resumed, it continues.
pub async fn paused_queues_hand_out_nothing<S: Store>(store: S, _: MockClock) {
    store.set_paused("q", true).await.unwrap();
    store.add("q", vec![job("a")]).await.unwrap();
    assert!(names(&store, "q", 1).await.is_empty());
    store.set_paused("q", false).await.unwrap();
    assert_eq!(names(&store, "q", 1).await, ["a"]);
}

/// Cancel takes a waiting job out at once; an active one can no longer extend its lease, and
/// ends cancelled when its worker reports.
pub async fn cancel_is_immediate_when_waiting_and_flagged_when_active<S: Store>(
    store: S,
    _: MockClock,
) {
    let ids = store.add("q", vec![job("a"), job("b")]).await.unwrap();
    let active = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(active.job.id, ids[0]);
    assert_eq!(
        store.cancel(&ids[1]).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(names(&store, "q", 1).await.is_empty());
    assert_eq!(store.cancel(&ids[0]).await.unwrap().state, JobState::Active);
    let extend = store.extend(&ids[0], &active.token, LEASE).await;
    assert!(
        matches!(&extend, Err(QueueError::Conflict { reason, .. }) if reason.contains("cancelled")),
        "{extend:?}"
    );
    store
        .complete(&ids[0], &active.token, json!(null))
        .await
        .unwrap();
    assert_eq!(
        store.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    let counts = store.counts("q").await.unwrap();
    assert_eq!(counts.get("cancelled"), Some(&2));
}

/// One invalid job in a bulk add writes none, and the error names it.
pub async fn bulk_adds_are_all_or_nothing<S: Store>(store: S, _: MockClock) {
    let mut bad = job("bad");
    bad.options.attempts = 0;
    let err = store
        .add("q", vec![job("a"), job("b"), bad])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        QueueError::Invalid {
            field: "jobs[2].options.attempts".into(),
            detail: "must be at least 1".into()
        }
    );
    assert!(store.counts("q").await.unwrap().is_empty());
    let ids = store
        .add("q", (0..500).map(|i| job(&format!("j{i}"))).collect())
        .await
        .unwrap();
    assert_eq!(ids.len(), 500);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in add order");
    assert_eq!(store.counts("q").await.unwrap().get("waiting"), Some(&500));
}

/// Pruning keeps the newest finished jobs per queue and state, drops finished jobs past the age
/// limit, never touches unfinished ones, and works in bounded steps.
pub async fn retention_keeps_the_newest_finished_jobs<S: Store>(store: S, time: MockClock) {
    let mut first_queue_ids = Vec::new();
    for queue in ["a", "b"] {
        let ids = store
            .add(queue, (0..6).map(|i| job(&format!("{queue}{i}"))).collect())
            .await
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            let f = store.fetch(queue, "w", 1, LEASE).await.unwrap().remove(0);
            assert_eq!(&f.job.id, id);
            if i < 4 {
                store.complete(id, &f.token, json!(i)).await.unwrap();
            } else {
                let failure = Failure::no_retry("x");
                store.fail(id, &f.token, failure).await.unwrap();
            }
            time.advance(secs(1));
        }
        store.add(queue, vec![job("still-waiting")]).await.unwrap();
        if first_queue_ids.is_empty() {
            first_queue_ids = ids;
        }
    }
    let keep = Retention {
        completed: 2,
        failed: 1,
        max_age: None,
    };
    // Bounded steps: 3 to delete per queue, 6 in all.
    assert_eq!(store.prune(keep.into(), 4).await.unwrap(), 4);
    assert_eq!(store.prune(keep.into(), 4).await.unwrap(), 2);
    assert_eq!(store.prune(keep.into(), 4).await.unwrap(), 0);
    for queue in ["a", "b"] {
        let counts = store.counts(queue).await.unwrap();
        assert_eq!(
            (
                counts.get("completed"),
                counts.get("failed"),
                counts.get("waiting")
            ),
            (Some(&2), Some(&1), Some(&1)),
            "{queue}: {counts:?}"
        );
    }
    // The newest of each kind were kept: completed a2, a3 and failed a5.
    let mut kept = Vec::new();
    for id in &first_queue_ids {
        if let Some(job) = store.get(id).await.unwrap() {
            kept.push(job.name);
        }
    }
    assert_eq!(kept, ["a2", "a3", "a5"]);
    // An age limit removes the rest once they are old enough.
    time.advance(secs(3600));
    let aged = Retention {
        max_age: Some(secs(60)),
        ..keep
    };
    assert_eq!(store.prune(aged.into(), 100).await.unwrap(), 6);
    assert_eq!(store.counts("b").await.unwrap().get("waiting"), Some(&1));
}

/// A queue's own retention overrides the default for that queue only.
pub async fn queues_can_keep_more_or_less_than_the_default<S: Store>(store: S, _: MockClock) {
    for queue in ["audit", "noisy"] {
        let jobs = (0..3).map(|i| job(&format!("{queue}{i}"))).collect();
        store.add(queue, jobs).await.unwrap();
        for f in store.fetch(queue, "w", 3, LEASE).await.unwrap() {
            store.complete(&f.job.id, &f.token, json!(1)).await.unwrap();
        }
    }
    let default = Retention {
        completed: 1,
        failed: 1,
        max_age: None,
    };
    let policy = crate::store::RetentionPolicy {
        default,
        queues: [(
            "audit".to_owned(),
            Retention {
                completed: 10,
                ..default
            },
        )]
        .into(),
    };
    assert_eq!(store.prune(policy, 100).await.unwrap(), 2);
    let completed = |counts: std::collections::BTreeMap<String, u64>| counts["completed"];
    assert_eq!(completed(store.counts("audit").await.unwrap()), 3);
    assert_eq!(completed(store.counts("noisy").await.unwrap()), 1);
}

/// The overview lists every queue with jobs, and paused queues even without jobs, by name.
pub async fn the_overview_lists_queues_with_counts_and_pauses<S: Store>(store: S, _: MockClock) {
    store.add("b", vec![job("1"), job("2")]).await.unwrap();
    store.add("a", vec![job("3")]).await.unwrap();
    store.fetch("a", "w", 1, LEASE).await.unwrap();
    store.set_paused("empty", true).await.unwrap();
    store.set_paused("b", true).await.unwrap();
    store.set_paused("b", false).await.unwrap();
    let overview = store.overview().await.unwrap();
    let summary: Vec<String> = overview
        .into_iter()
        .map(|q| format!("{} paused={} {:?}", q.name, q.paused, q.counts))
        .collect();
    assert_eq!(
        summary,
        [
            r#"a paused=false {"active": 1}"#,
            r#"b paused=false {"waiting": 2}"#,
            "empty paused=true {}",
        ]
    );
}

/// Progress is kept with the job (and refused once it is cancelled); a delayed job can be
/// promoted; a failed job can be retried with a fresh set of attempts.
pub async fn progress_promote_and_retry<S: Store>(store: S, _: MockClock) {
    let mut later = job("later");
    later.options.delay_ms = 60_000;
    let mut once = job("once");
    once.options.attempts = 1;
    let ids = store.add("q", vec![once, later]).await.unwrap();
    let f = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    store
        .progress(&ids[0], &f.token, 40, Some(json!({"step": "upload"})))
        .await
        .unwrap();
    let j = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (j.progress, j.progress_data),
        (40, Some(json!({"step": "upload"})))
    );
    let wrong = store.progress(&ids[0], "nope", 50, None).await;
    assert!(
        matches!(wrong, Err(QueueError::Conflict { .. })),
        "{wrong:?}"
    );
    let failure = Failure::retry("boom");
    assert_eq!(
        store.fail(&ids[0], &f.token, failure).await.unwrap().state,
        JobState::Failed
    );
    let promoted = store.promote(&ids[1]).await.unwrap();
    assert_eq!(
        (promoted.queue.as_str(), promoted.state),
        ("q", JobState::Waiting)
    );
    assert!(matches!(
        store.promote(&ids[1]).await,
        Err(QueueError::Conflict { .. })
    ));
    assert_eq!(names(&store, "q", 1).await, ["later"]);
    assert!(matches!(
        store.retry(&ids[1]).await,
        Err(QueueError::Conflict { .. })
    ));
    assert_eq!(store.retry(&ids[0]).await.unwrap().state, JobState::Waiting);
    let retried = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        retried.attempts_made, 0,
        "a retried job starts a fresh set of attempts"
    );
    let again = store.fetch("q", "w", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        (again.job.id.as_str(), again.job.attempts_made),
        (ids[0].as_str(), 1)
    );
    assert_eq!(again.job.errors, ["boom"]);
    assert_eq!(store.cancel(&ids[0]).await.unwrap().state, JobState::Active);
    let cancelled = store.progress(&ids[0], &again.token, 60, None).await;
    assert!(
        matches!(&cancelled, Err(QueueError::Conflict { reason, .. }) if reason.contains("cancelled")),
        "{cancelled:?}"
    );
    assert!(matches!(
        store.promote("missing").await,
        Err(QueueError::NoJob(_))
    ));
}

/// Listings are newest first and cursor-paged; state, name and group filter; search matches the
/// id exactly, or name or payload text (LIKE wildcards in the search are literal).
pub async fn listings_page_newest_first_with_filters_and_search<S: Store>(store: S, _: MockClock) {
    let mut jobs: Vec<NewJob> = (0..25)
        .map(|i| NewJob::new(if i % 2 == 0 { "even" } else { "odd" }, json!({"n": i})))
        .collect();
    jobs[3].payload = json!({"email": "ada_lovelace@example.com"});
    jobs[4].payload = json!({"note": "100% done"});
    jobs[5].options.group = Some("tenant-7".into());
    let ids = store.add("q", jobs).await.unwrap();
    store.add("other", vec![job("even")]).await.unwrap();
    let names_of = |page: &crate::store::JobPage| -> Vec<String> {
        page.jobs.iter().map(|j| j.id.clone()).collect()
    };
    // Paging, newest first, every job exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list("q", JobFilter::default(), cursor.as_deref(), 10)
            .await
            .unwrap();
        seen.extend(names_of(&page));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let filtered = |filter: JobFilter| {
        let store = &store;
        async move { store.list("q", filter, None, 100).await.unwrap().jobs }
    };
    let odd = filtered(JobFilter {
        name: Some("odd".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(odd.len(), 12);
    let grouped = filtered(JobFilter {
        group: Some("tenant-7".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(grouped.len(), 1);
    assert_eq!(grouped[0].id, ids[5]);
    let search = |text: &str| JobFilter {
        search: Some(text.into()),
        ..JobFilter::default()
    };
    assert_eq!(filtered(search("lovelace")).await[0].id, ids[3]);
    assert_eq!(filtered(search("0%")).await.len(), 1, "% is literal");
    assert_eq!(filtered(search("_")).await.len(), 1, "_ is literal");
    assert_eq!(filtered(search(&ids[7])).await[0].id, ids[7]);
    store.fetch("q", "w", 2, LEASE).await.unwrap();
    let active = filtered(JobFilter {
        state: Some(JobState::Active),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(active.len(), 2);
    assert!(matches!(
        store
            .list("q", JobFilter::default(), Some("not-a-cursor"), 10)
            .await,
        Err(QueueError::Invalid { .. })
    ));
}

/// Clean deletes finished jobs of one state older than a bound; retry-failed revives every
/// failed job of one queue.
pub async fn clean_and_retry_failed_act_on_one_queue<S: Store>(store: S, time: MockClock) {
    let finish = |queue: &'static str, ok: bool| {
        let store = &store;
        async move {
            let mut j = job("j");
            j.options.attempts = 1;
            store.add(queue, vec![j]).await.unwrap();
            let f = store.fetch(queue, "w", 1, LEASE).await.unwrap().remove(0);
            if ok {
                store
                    .complete(&f.job.id, &f.token, json!(null))
                    .await
                    .unwrap();
            } else {
                let failure = Failure::no_retry("x");
                store.fail(&f.job.id, &f.token, failure).await.unwrap();
            }
        }
    };
    finish("q", true).await;
    finish("q", false).await;
    finish("other", true).await;
    time.advance(secs(3600));
    finish("q", true).await;
    let cleaned = store
        .clean("q", JobState::Completed, secs(60))
        .await
        .unwrap();
    assert_eq!(cleaned, 1, "only the old completed job of q");
    assert!(matches!(
        store.clean("q", JobState::Waiting, secs(0)).await,
        Err(QueueError::Invalid { .. })
    ));
    finish("q", false).await;
    assert_eq!(store.retry_failed("q").await.unwrap(), 2);
    let counts = store.counts("q").await.unwrap();
    assert_eq!(
        (
            counts.get("waiting"),
            counts.get("completed"),
            counts.get("failed")
        ),
        (Some(&2), Some(&1), None)
    );
    assert_eq!(
        store.counts("other").await.unwrap().get("completed"),
        Some(&1)
    );
    let again = store.fetch("q", "w", 2, LEASE).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|f| f.job.attempts_made)
            .collect::<Vec<_>>(),
        [1, 1],
        "jobs retried together start fresh attempts"
    );
}
