//! The service's storage: regions (content-addressed, versioned by name), plans (versions per
//! region, with their locked lessons), edits and solve jobs, in SQLite or PostgreSQL through
//! `sqlx::Any`. Every write runs in one transaction; SQL is written once with `$N` parameters,
//! which both SQLite and PostgreSQL accept.

mod schema;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::model::{Plan, Region};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database URL {0:?}: expected sqlite://PATH, sqlite::memory: or postgres://...")]
    Url(String),
    #[error("stored document {what} {id} does not parse: {message}")]
    Corrupt {
        what: &'static str,
        id: i64,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionInfo {
    pub id: i64,
    pub name: String,
    /// 1 for the first region stored under this name, then 2, 3, ... for changed contents.
    pub version: i64,
    /// SHA-256 of the region's canonical JSON.
    pub hash: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanInfo {
    pub id: i64,
    pub region_id: i64,
    pub version: i64,
    /// The plan this one was made from (an edit or a re-solve), if any.
    pub parent_id: Option<i64>,
    /// `solve`, `resolve`, `lock`, `unlock` or `move`.
    pub origin: String,
    pub locked: Vec<String>,
    pub lessons: i64,
    pub coverage: f64,
    pub objective: f64,
    pub bound: f64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EditInfo {
    pub id: i64,
    /// The plan the edit produced.
    pub plan_id: i64,
    /// The plan it was applied to.
    pub parent_id: i64,
    pub kind: String,
    pub lesson: String,
    pub payload: serde_json::Value,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobInfo {
    pub id: i64,
    pub region_id: i64,
    /// `solve` or `resolve`.
    pub kind: String,
    pub parent_plan_id: Option<i64>,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub progress: f64,
    pub message: String,
    pub plan_id: Option<i64>,
    pub error: Option<String>,
    pub time_limit_s: f64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A plan to store, with where it came from.
pub struct NewPlan<'a> {
    pub region_id: i64,
    pub parent_id: Option<i64>,
    pub origin: &'a str,
    pub plan: &'a Plan,
    pub locked: &'a BTreeSet<String>,
}

/// The edit that produced a plan (stored with it, in the same transaction).
pub struct NewEdit<'a> {
    pub kind: &'a str,
    pub lesson: &'a str,
    pub payload: serde_json::Value,
}

/// How often a write that lost a race for a version number is tried again.
const RETRIES: u32 = 8;

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The canonical text of a region and its hash: formatting and key order of the upload do not
/// matter, the contents do.
pub fn canonical(region: &Region) -> (String, String) {
    let text = serde_json::to_string_pretty(region).expect("a region serializes");
    let hash = Sha256::digest(text.as_bytes());
    let hex = hash.iter().map(|b| format!("{b:02x}")).collect();
    (text, hex)
}

/// `sqlite://file.db` opens (and creates) a file; PostgreSQL URLs pass through.
fn normalise(url: &str) -> Result<(String, Backend), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.contains("mode=") || rest.starts_with(":memory:") {
            return Ok((url.to_string(), Backend::Sqlite));
        }
        let sep = if rest.contains('?') { '&' } else { '?' };
        return Ok((format!("{url}{sep}mode=rwc"), Backend::Sqlite));
    }
    Err(StoreError::Url(url.to_string()))
}

const REGION_COLS: &str = "id, name, version, hash, created_ms";
const PLAN_COLS: &str =
    "id, region_id, version, parent_id, origin, locked, lessons, coverage, objective, bound, created_ms";
const JOB_COLS: &str = "id, region_id, kind, parent_plan_id, state, progress, message, plan_id, error, time_limit_s, created_ms, updated_ms";

fn region_info(r: &AnyRow) -> Result<RegionInfo, sqlx::Error> {
    Ok(RegionInfo {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        version: r.try_get(2)?,
        hash: r.try_get(3)?,
        created_ms: r.try_get(4)?,
    })
}

fn plan_info(r: &AnyRow) -> Result<PlanInfo, sqlx::Error> {
    let locked: String = r.try_get(5)?;
    Ok(PlanInfo {
        id: r.try_get(0)?,
        region_id: r.try_get(1)?,
        version: r.try_get(2)?,
        parent_id: r.try_get(3)?,
        origin: r.try_get(4)?,
        locked: serde_json::from_str(&locked).unwrap_or_default(),
        lessons: r.try_get(6)?,
        coverage: r.try_get(7)?,
        objective: r.try_get(8)?,
        bound: r.try_get(9)?,
        created_ms: r.try_get(10)?,
    })
}

fn job_info(r: &AnyRow) -> Result<JobInfo, sqlx::Error> {
    Ok(JobInfo {
        id: r.try_get(0)?,
        region_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        parent_plan_id: r.try_get(3)?,
        state: r.try_get(4)?,
        progress: r.try_get(5)?,
        message: r.try_get(6)?,
        plan_id: r.try_get(7)?,
        error: r.try_get(8)?,
        time_limit_s: r.try_get(9)?,
        created_ms: r.try_get(10)?,
        updated_ms: r.try_get(11)?,
    })
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalise(url)?;
        // SQLite allows one writer, and a transaction that reads and then writes fails at once
        // (SQLITE_BUSY, no waiting) when another one wrote in between; one connection
        // serialises them instead. Requests here are small, so this costs little.
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        let store = Store { pool, backend };
        schema::migrate(&store.pool, backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ------------------------------------------------------------ regions

    /// Stores a region unless the same contents are stored already; returns it and whether it
    /// is new. A changed region under a known name becomes that name's next version (a new id);
    /// earlier versions and their plans stay.
    pub async fn put_region(&self, region: &Region) -> Result<(RegionInfo, bool), StoreError> {
        // A concurrent upload of another version under the same name may take the version
        // number first (unique violation): try again with the next one.
        let mut tries = 0;
        loop {
            match self.try_put_region(region).await {
                Err(e) if is_unique_violation(&e) && tries < RETRIES => tries += 1,
                r => return r,
            }
        }
    }

    async fn try_put_region(&self, region: &Region) -> Result<(RegionInfo, bool), StoreError> {
        let (doc, hash) = canonical(region);
        let mut tx = self.pool.begin().await?;
        let q = format!("SELECT {REGION_COLS} FROM regions WHERE hash = $1");
        if let Some(row) = sqlx::query(&q).bind(&hash).fetch_optional(&mut *tx).await? {
            tx.commit().await?;
            return Ok((region_info(&row)?, false));
        }
        let name = if region.name.is_empty() {
            "region".to_string()
        } else {
            region.name.clone()
        };
        let version: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM regions WHERE name = $1")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let q = format!(
            "INSERT INTO regions (name, version, hash, doc, created_ms) VALUES ($1, $2, $3, $4, $5) RETURNING {REGION_COLS}"
        );
        let row = sqlx::query(&q)
            .bind(&name)
            .bind(version)
            .bind(&hash)
            .bind(&doc)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await;
        // On a unique violation (the same region uploaded at once, or another version took the
        // number) the caller retries; the retry finds the stored region by its hash.
        let row = row?;
        tx.commit().await?;
        Ok((region_info(&row)?, true))
    }

    pub async fn regions(&self) -> Result<Vec<RegionInfo>, StoreError> {
        let q = format!("SELECT {REGION_COLS} FROM regions ORDER BY id");
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(region_info).collect::<Result<_, _>>()?)
    }

    pub async fn region(&self, id: i64) -> Result<Option<(RegionInfo, Region)>, StoreError> {
        let q = format!("SELECT {REGION_COLS}, doc FROM regions WHERE id = $1");
        let Some(row) = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let doc: String = row.try_get(5)?;
        let region = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
            what: "region",
            id,
            message: e.to_string(),
        })?;
        Ok(Some((region_info(&row)?, region)))
    }

    /// Deletes a region with its plans, edits and jobs; refuses while a job of it runs.
    pub async fn delete_region(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let busy: i64 = sqlx::query(
            "SELECT COUNT(*) FROM jobs WHERE region_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if busy > 0 {
            return Err(StoreError::Conflict(format!(
                "region {id} has a solve job in progress"
            )));
        }
        sqlx::query("DELETE FROM jobs WHERE region_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM edits WHERE plan_id IN (SELECT id FROM plans WHERE region_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Parents first pointed at, so unlink them before deleting the versions.
        sqlx::query("UPDATE plans SET parent_id = NULL WHERE region_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM plans WHERE region_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM regions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Row counts of the tables (regions, plans, edits, jobs), for tests and `/healthz`.
    pub async fn counts(&self) -> Result<[i64; 4], StoreError> {
        let mut out = [0; 4];
        for (i, t) in ["regions", "plans", "edits", "jobs"].iter().enumerate() {
            out[i] = sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        }
        Ok(out)
    }

    // ------------------------------------------------------------ plans

    async fn insert_plan_tx(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        p: &NewPlan<'_>,
    ) -> Result<PlanInfo, StoreError> {
        let version: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM plans WHERE region_id = $1")
                .bind(p.region_id)
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?;
        let doc = serde_json::to_string_pretty(p.plan).expect("a plan serializes");
        let locked = serde_json::to_string(p.locked).expect("ids serialize");
        let q = format!(
            "INSERT INTO plans (region_id, version, parent_id, origin, doc, locked, lessons, coverage, objective, bound, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {PLAN_COLS}"
        );
        let row = sqlx::query(&q)
            .bind(p.region_id)
            .bind(version)
            .bind(p.parent_id)
            .bind(p.origin)
            .bind(doc)
            .bind(locked)
            .bind(p.plan.lessons.len() as i64)
            .bind(p.plan.stats.coverage)
            .bind(p.plan.stats.objective)
            .bind(p.plan.stats.bound)
            .bind(now_ms())
            .fetch_one(&mut **tx)
            .await?;
        Ok(plan_info(&row)?)
    }

    /// Stores a plan made by an edit of `plan.parent_id`, together with the edit record.
    pub async fn put_edit(
        &self,
        p: &NewPlan<'_>,
        edit: &NewEdit<'_>,
    ) -> Result<PlanInfo, StoreError> {
        // Concurrent edits of one region race for the next version number; the loser retries.
        let mut tries = 0;
        loop {
            match self.try_put_edit(p, edit).await {
                Err(e) if is_unique_violation(&e) && tries < RETRIES => tries += 1,
                r => return r,
            }
        }
    }

    async fn try_put_edit(
        &self,
        p: &NewPlan<'_>,
        edit: &NewEdit<'_>,
    ) -> Result<PlanInfo, StoreError> {
        let mut tx = self.pool.begin().await?;
        let info = Self::insert_plan_tx(&mut tx, p).await?;
        sqlx::query(
            "INSERT INTO edits (plan_id, parent_id, kind, lesson, payload, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(info.id)
        .bind(p.parent_id.unwrap_or(0))
        .bind(edit.kind)
        .bind(edit.lesson)
        .bind(edit.payload.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    pub async fn plan(&self, id: i64) -> Result<Option<(PlanInfo, Plan)>, StoreError> {
        let q = format!("SELECT {PLAN_COLS}, doc FROM plans WHERE id = $1");
        let Some(row) = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let doc: String = row.try_get(11)?;
        let plan = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
            what: "plan",
            id,
            message: e.to_string(),
        })?;
        Ok(Some((plan_info(&row)?, plan)))
    }

    pub async fn plans(&self, region_id: i64) -> Result<Vec<PlanInfo>, StoreError> {
        let q = format!("SELECT {PLAN_COLS} FROM plans WHERE region_id = $1 ORDER BY version");
        let rows = sqlx::query(&q)
            .bind(region_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(plan_info).collect::<Result<_, _>>()?)
    }

    /// The edits that made the plans of a region, oldest first.
    pub async fn edits(&self, region_id: i64) -> Result<Vec<EditInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.plan_id, e.parent_id, e.kind, e.lesson, e.payload, e.created_ms \
             FROM edits e JOIN plans p ON p.id = e.plan_id WHERE p.region_id = $1 ORDER BY e.id",
        )
        .bind(region_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get(5)?;
                Ok(EditInfo {
                    id: r.try_get(0)?,
                    plan_id: r.try_get(1)?,
                    parent_id: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    lesson: r.try_get(4)?,
                    payload: serde_json::from_str(&payload).unwrap_or_default(),
                    created_ms: r.try_get(6)?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ jobs

    pub async fn create_job(
        &self,
        region_id: i64,
        kind: &str,
        parent_plan_id: Option<i64>,
        time_limit_s: f64,
    ) -> Result<JobInfo, StoreError> {
        let mut tx = self.pool.begin().await?;
        let t = now_ms();
        let q = format!(
            "INSERT INTO jobs (region_id, kind, parent_plan_id, state, progress, message, time_limit_s, created_ms, updated_ms) \
             VALUES ($1, $2, $3, 'queued', 0.0, 'waiting for the solver', $4, $5, $5) RETURNING {JOB_COLS}"
        );
        let row = sqlx::query(&q)
            .bind(region_id)
            .bind(kind)
            .bind(parent_plan_id)
            .bind(time_limit_s)
            .bind(t)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(job_info(&row)?)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobInfo>, StoreError> {
        let q = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(job_info).transpose()?)
    }

    /// Moves a job on from `from` to `state` (with progress and message); false if it was no
    /// longer in `from` (cancelled meanwhile, say).
    pub async fn set_job_state(
        &self,
        id: i64,
        from: &str,
        state: &str,
        progress: f64,
        message: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, progress = $2, message = $3, error = $4, updated_ms = $5 WHERE id = $6 AND state = $7",
        )
        .bind(state)
        .bind(progress)
        .bind(message)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Stores a job's plan and marks the job done, in one transaction; nothing is stored if the
    /// job is no longer running (cancelled at shutdown).
    pub async fn finish_job(
        &self,
        job_id: i64,
        p: &NewPlan<'_>,
    ) -> Result<Option<PlanInfo>, StoreError> {
        let mut tries = 0;
        loop {
            match self.try_finish_job(job_id, p).await {
                Err(e) if is_unique_violation(&e) && tries < RETRIES => tries += 1,
                r => return r,
            }
        }
    }

    async fn try_finish_job(
        &self,
        job_id: i64,
        p: &NewPlan<'_>,
    ) -> Result<Option<PlanInfo>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let running: Option<String> = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if running.as_deref() != Some("running") {
            return Ok(None);
        }
        let info = Self::insert_plan_tx(&mut tx, p).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', progress = 1.0, message = 'done', plan_id = $1, updated_ms = $2 WHERE id = $3",
        )
        .bind(info.id)
        .bind(now_ms())
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(info))
    }

    /// Marks every queued or running job `state` with `error` (at startup: jobs a previous
    /// process left behind; at shutdown: jobs still in flight). Returns how many.
    pub async fn abandon_jobs(&self, state: &str, error: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, error = $2, message = $2, updated_ms = $3 WHERE state IN ('queued', 'running')",
        )
        .bind(state)
        .bind(error)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalise("sqlite://x.db").unwrap(),
            ("sqlite://x.db?mode=rwc".into(), Backend::Sqlite)
        );
        assert_eq!(
            normalise("sqlite://x.db?mode=ro").unwrap().0,
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(normalise("postgres://u@h/db").unwrap().1, Backend::Postgres);
        assert!(normalise("mysql://h/db").is_err());
    }
}
