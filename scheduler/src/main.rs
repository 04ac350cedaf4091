//! `scheduler`: generate regions, solve them to a certified optimum, validate, export, mint tokens,
//! import CSV bundles, and serve it all over REST with a database (`serve`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use scheduler::generate::{generate, Preset};
use scheduler::model::{load_plan, load_region};
use scheduler::solve::{solve, SolveOptions};
use scheduler::{export, token, validate};

#[derive(Parser)]
#[command(
    name = "scheduler",
    version,
    about = "Timetables for live synchronous classrooms (专递课堂)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a generated region (JSON) to stdout.
    Generate {
        #[arg(long, value_enum, default_value = "county")]
        preset: Preset,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Solves a region into a plan.
    Solve {
        region: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Wall-clock limit for the whole solve, e.g. 60s, 5m.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        time_limit: Duration,
        /// Greedy start only, no MILP (for comparison).
        #[arg(long)]
        greedy_only: bool,
    },
    /// Checks every hard rule of a plan against its region and recomputes the stats.
    Validate { region: PathBuf, plan: PathBuf },
    /// Exports a plan to iCalendar files and CSV tables.
    Export {
        plan: PathBuf,
        #[arg(long)]
        ics: Option<PathBuf>,
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Monday the term starts.
        #[arg(long, default_value = "2026-09-07")]
        term_start: String,
        #[arg(long, default_value_t = 18)]
        weeks: u32,
    },
    /// Prints the teacher and classroom join tokens of one lesson (JSON).
    Tokens {
        plan: PathBuf,
        #[arg(long)]
        lesson: String,
        #[arg(long, env = "CLASSROOM_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// In an SFU cluster: the node the lesson is taught from (put in the teacher's token).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Reads a region from a directory of CSV files (see README) and writes its JSON to stdout.
    ImportCsv { dir: PathBuf },
    /// Runs the REST service over a database (SQLite file or PostgreSQL).
    Serve {
        /// `sqlite://FILE` (created if missing) or `postgres://USER:PASS@HOST/DB`.
        #[arg(long, env = "SCHEDULER_DB", default_value = "sqlite://scheduler.db")]
        db: String,
        /// Address to listen on (port 0: any free port; the address is printed on stdout).
        #[arg(long, default_value = "127.0.0.1:7900")]
        http: String,
        /// The SFU's shared secret, for join tokens.
        #[arg(long, env = "CLASSROOM_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Base URL of the SFU serving teacher.html and classroom.html, for join links.
        #[arg(long, default_value = "http://127.0.0.1:7800")]
        sfu_url: String,
        /// Largest request body in MiB.
        #[arg(long, default_value_t = 16)]
        max_body_mb: usize,
        /// Lifetime of join tokens.
        #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
    },
}

/// Runs the service until SIGTERM or ctrl-c.
fn serve(db: &str, http: &str, cfg: scheduler::api::Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        let store = scheduler::store::Store::open(db)
            .await
            .with_context(|| format!("opening {db}"))?;
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("listening on {http}"))?;
        let addr = listener.local_addr()?;
        // The first line on stdout is the address (tests start the server on port 0).
        println!("{}", scheduler::api::describe(addr));
        std::io::stdout().flush()?;
        tracing::info!(%addr, backend = ?store.backend(), "serving");
        scheduler::api::serve(listener, store, cfg, shutdown_signal()).await
    });
    // A solve still running on a blocking thread is abandoned (its job is marked cancelled).
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = &res {
        eprintln!("Error: {e:?}");
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Everything the service keeps is stored and closed by now. The process's exit handlers
    // would tear down HiGHS's C++ statics under an abandoned solver thread still inside HiGHS:
    // that crashed the process (SIGSEGV) after a SIGTERM during a solve. `_exit` skips them.
    // SAFETY: ends the process at once; nothing after it runs.
    unsafe { libc::_exit(if res.is_ok() { 0 } else { 1 }) }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("no SIGTERM handler: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

fn main() -> Result<()> {
    // HiGHS warns on every time limit it reaches; that is expected here, hence `highs=error`.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,highs=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Generate { preset, seed } => {
            let region = generate(preset, seed);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &region)?;
            writeln!(out)?;
        }
        Cmd::Solve {
            region,
            out,
            time_limit,
            greedy_only,
        } => {
            let r = load_region(&region)?;
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} county solves {pos}/{len} (coverage, then fuller lessons) {wide_bar}",
                )
                .expect("template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let opts = SolveOptions {
                time_limit,
                greedy_only,
            };
            let plan = solve(&r, &opts, &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            });
            bar.finish_and_clear();
            let text = serde_json::to_string_pretty(&plan)?;
            std::fs::write(&out, text + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            let s = &plan.stats;
            eprintln!(
                "{} lessons, coverage {:.2}% ({}/{} periods), objective {}, bound {}, gap {:.4}%, \
                 coverage proven in {}/{} counties, whole objective in {}, first feasible {:.2}s, total {:.2}s",
                plan.lessons.len(),
                s.coverage * 100.0,
                s.met_periods,
                s.demand_periods,
                s.objective,
                s.bound,
                s.gap * 100.0,
                s.counties_coverage_optimal,
                s.counties,
                s.counties_optimal,
                s.first_feasible_seconds,
                s.solve_seconds
            );
        }
        Cmd::Validate { region, plan } => {
            let r = load_region(&region)?;
            let p = load_plan(&plan)?;
            let rep = validate::validate(&r, &p);
            for e in &rep.errors {
                println!("{e}");
            }
            println!(
                "coverage {:.4} ({}/{}), objective {}, terms {:?}",
                rep.coverage, rep.met_periods, rep.demand_periods, rep.objective, rep.terms
            );
            if !rep.ok() {
                bail!("{} violation(s)", rep.errors.len());
            }
            println!("valid");
        }
        Cmd::Export {
            plan,
            ics,
            csv,
            term_start,
            weeks,
        } => {
            let p = load_plan(&plan)?;
            if ics.is_none() && csv.is_none() {
                bail!("nothing to do: give --ics DIR and/or --csv DIR");
            }
            if let Some(dir) = ics {
                let o = export::ical::CalOptions {
                    term_start: export::ical::parse_date(&term_start)?,
                    weeks,
                };
                let n = export::ical::export(&p, &dir, &o)?;
                eprintln!("{n} calendars in {}", dir.display());
            }
            if let Some(dir) = csv {
                export::csv::export(&p, &dir)?;
                eprintln!("lessons.csv, pairings.csv, unmet.csv in {}", dir.display());
            }
        }
        Cmd::Tokens {
            plan,
            lesson,
            secret,
            ttl,
            origin,
        } => {
            let p = load_plan(&plan)?;
            let l = p
                .lessons
                .iter()
                .find(|l| l.id == lesson || l.room == lesson)
                .with_context(|| format!("no lesson or room {lesson:?} in the plan"))?;
            let m = token::Minter::new(&secret)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&m.lesson_tokens(l, ttl, origin.as_deref())?)?
            );
        }
        Cmd::ImportCsv { dir } => {
            let region = scheduler::import::csv::load_dir(&dir)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &region)?;
            writeln!(out)?;
        }
        Cmd::Serve {
            db,
            http,
            secret,
            sfu_url,
            max_body_mb,
            token_ttl,
        } => {
            let cfg = scheduler::api::Config {
                secret: secret.filter(|s| !s.is_empty()),
                sfu_url,
                max_body: max_body_mb.max(1) << 20,
                token_ttl,
            };
            serve(&db, &http, cfg)?;
        }
    }
    Ok(())
}
