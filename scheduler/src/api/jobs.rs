//! Solve jobs: one solve at a time on a blocking thread (the solver uses every core), progress
//! kept in memory while it runs, the plan and the job's end stored in one transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::edit;
use crate::model::{Plan, Region};
use crate::solve::{solve, SolveOptions};
use crate::store::{JobInfo, NewPlan, Store};

/// Live progress of a running job (the solver's county counter).
#[derive(Default)]
pub struct Live {
    pub done: AtomicUsize,
    pub total: AtomicUsize,
    /// The solve is over and a re-solve merges with the locked lessons.
    pub merging: AtomicBool,
}

impl Live {
    /// (fraction, message) for the job's current state.
    pub fn report(&self) -> (f64, String) {
        let (d, t) = (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        if self.merging.load(Ordering::Relaxed) {
            return (0.99, "merging with the locked lessons".into());
        }
        if t == 0 {
            return (0.0, "building the model".into());
        }
        // Two passes over the counties: coverage first, then the lower terms.
        let half = t / 2;
        let msg = if d < half || half == 0 {
            format!("coverage: {d}/{half} counties")
        } else {
            format!("fuller lessons: {}/{half} counties", d - half)
        };
        (d as f64 / t as f64, msg)
    }
}

/// What a job solves.
pub enum Work {
    Solve {
        region_id: i64,
        region: Region,
    },
    /// Re-solve `parent` around its locked lessons.
    Resolve {
        region_id: i64,
        region: Region,
        parent_id: i64,
        parent: Box<Plan>,
        locked: BTreeSet<String>,
    },
}

pub struct Jobs {
    store: Store,
    live: Mutex<HashMap<i64, Arc<Live>>>,
    /// One solve at a time: on a small machine two would only slow each other down.
    slots: Semaphore,
}

impl Jobs {
    pub fn new(store: Store) -> Arc<Jobs> {
        Arc::new(Jobs {
            store,
            live: Mutex::new(HashMap::new()),
            slots: Semaphore::new(1),
        })
    }

    pub fn live(&self, id: i64) -> Option<Arc<Live>> {
        self.live.lock().expect("jobs lock").get(&id).cloned()
    }

    /// A stored job with its live progress when it runs.
    pub fn view(&self, mut j: JobInfo) -> JobInfo {
        if j.state == "running" {
            if let Some(l) = self.live(j.id) {
                (j.progress, j.message) = l.report();
            }
        }
        j
    }

    /// Starts a stored (queued) job in the background.
    pub fn start(self: &Arc<Self>, job: JobInfo, work: Work, opts: SolveOptions) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = job.id;
            if let Err(e) = me.run(job, work, opts).await {
                tracing::error!(job = id, "job failed: {e}");
                for from in ["running", "queued"] {
                    let _ = me
                        .store
                        .set_job_state(id, from, "failed", 0.0, "failed", Some(&e))
                        .await;
                }
            }
            me.live.lock().expect("jobs lock").remove(&id);
        });
    }

    async fn run(&self, job: JobInfo, work: Work, opts: SolveOptions) -> Result<(), String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let live = Arc::new(Live::default());
        self.live
            .lock()
            .expect("jobs lock")
            .insert(job.id, live.clone());
        let started = self
            .store
            .set_job_state(job.id, "queued", "running", 0.0, "solving", None)
            .await
            .map_err(|e| e.to_string())?;
        if !started {
            // Cancelled while queued.
            return Ok(());
        }
        tracing::info!(job = job.id, kind = %job.kind, "solving");
        let progress = live.clone();
        let solved = tokio::task::spawn_blocking(move || {
            let cb = |d: usize, t: usize| {
                progress.total.store(t, Ordering::Relaxed);
                progress.done.store(d, Ordering::Relaxed);
            };
            match work {
                Work::Solve { region_id, region } => {
                    let plan = solve(&region, &opts, &cb);
                    (region_id, None, "solve", plan, BTreeSet::new())
                }
                Work::Resolve {
                    region_id,
                    region,
                    parent_id,
                    parent,
                    locked,
                } => {
                    let derived = edit::derive_region(&region, &parent, &locked);
                    let plan = solve(&derived, &opts, &cb);
                    progress.merging.store(true, Ordering::Relaxed);
                    let t0 = std::time::Instant::now();
                    let plan = edit::merge(&region, &parent, &locked, plan);
                    tracing::info!(
                        seconds = t0.elapsed().as_secs_f64(),
                        "merged with the locked lessons"
                    );
                    // Locks that survive: every locked lesson is kept verbatim.
                    (region_id, Some(parent_id), "resolve", plan, locked)
                }
            }
        })
        .await;
        let (region_id, parent_id, origin, plan, locked) = match solved {
            Ok(x) => x,
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(format!("the solver panicked: {msg}"));
            }
            Err(e) => return Err(format!("the solver thread ended: {e}")),
        };
        let stored = self
            .store
            .finish_job(
                job.id,
                &NewPlan {
                    region_id,
                    parent_id,
                    origin,
                    plan: &plan,
                    locked: &locked,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        match stored {
            Some(p) => tracing::info!(job = job.id, plan = p.id, "job done"),
            None => tracing::info!(job = job.id, "job was cancelled; its plan is not stored"),
        }
        Ok(())
    }
}

/// Time limit from a request: seconds, clamped to what a request may ask for.
pub fn time_limit(secs: Option<f64>) -> Result<Duration, String> {
    let s = secs.unwrap_or(60.0);
    if !s.is_finite() || s <= 0.0 || s > 3600.0 {
        return Err(format!("time_limit_s {s} is not in (0, 3600]"));
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_both_passes() {
        let l = Live::default();
        assert_eq!(l.report().0, 0.0);
        l.total.store(4, Ordering::Relaxed);
        l.done.store(1, Ordering::Relaxed);
        assert_eq!(l.report(), (0.25, "coverage: 1/2 counties".into()));
        l.done.store(3, Ordering::Relaxed);
        assert_eq!(l.report(), (0.75, "fuller lessons: 1/2 counties".into()));
        assert!(time_limit(Some(0.0)).is_err());
        assert!(time_limit(Some(f64::NAN)).is_err());
        assert_eq!(time_limit(None).unwrap(), Duration::from_secs(60));
    }
}
