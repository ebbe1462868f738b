//! What a run cost the parts under the service, per completed order: Redis
//! time and commands (`INFO commandstats`, reset before), PostgreSQL
//! commits and rows (`pg_stat_database` of the nodes' database) and the CPU
//! of every process involved (`/proc/<pid>/stat`). The rush calls `start`
//! after its set-up and `finish` when the buying stops.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

/// Linux's USER_HZ, fixed at 100 on every architecture we run on.
const TICKS_PER_SEC: f64 = 100.0;

pub struct Probe {
    redis: Option<redis::aio::MultiplexedConnection>,
    pg: Option<sqlx::PgPool>,
    /// (name, pid) of each process measured.
    pids: Vec<(String, u32)>,
    cpu_before: Vec<Option<u64>>,
    pg_before: Option<PgCounts>,
    at: Instant,
}

#[derive(Clone, Copy)]
struct PgCounts {
    commits: i64,
    inserted: i64,
    updated: i64,
}

/// utime + stime of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

async fn pg_counts(pool: &sqlx::PgPool) -> Result<PgCounts, String> {
    // Stats are sent at transaction end and cached per transaction: ask
    // for fresh ones.
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await;
    let (commits, inserted, updated): (i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(PgCounts {
        commits,
        inserted,
        updated,
    })
}

/// `cmdstat_<name>:calls=N,usec=N,...` lines as name -> (calls, usec).
fn command_stats(info: &str) -> BTreeMap<String, (u64, u64)> {
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
            stats.insert(name.to_owned(), (calls, usec));
        }
    }
    stats
}

/// The pid Redis reports for itself.
fn redis_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|v| v.parse().ok())
}

/// Commands that run a script: their time includes the commands inside.
const SCRIPT_CALLS: [&str; 4] = ["evalsha", "eval", "fcall", "evalsha_ro"];

impl Probe {
    /// Resets Redis's command statistics and notes where every counter
    /// stands. Parts that cannot be reached are left out of the report.
    pub async fn start(
        redis_url: Option<&str>,
        database_url: Option<&str>,
        server_pids: &[u32],
    ) -> Result<Probe, String> {
        let mut pids: Vec<(String, u32)> = server_pids
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("node-{}", i + 1), *p))
            .collect();
        pids.push(("load generator".into(), std::process::id()));
        let mut redis = None;
        if let Some(url) = redis_url {
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(pid) = redis_pid(&info) {
                pids.push(("redis".into(), pid));
            }
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            redis = Some(conn);
        }
        let (mut pg, mut pg_before) = (None, None);
        if let Some(url) = database_url {
            let pool = sqlx::PgPool::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            // The nodes' connections to this database: the pool keeps them
            // for the whole run.
            let backends: Vec<(i32,)> = sqlx::query_as(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?;
            for (i, (pid,)) in backends.into_iter().enumerate() {
                pids.push((format!("postgres-{}", i + 1), pid as u32));
            }
            pg_before = Some(pg_counts(&pool).await?);
            pg = Some(pool);
        }
        let cpu_before = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
        Ok(Probe {
            redis,
            pg,
            pids,
            cpu_before,
            pg_before,
            at: Instant::now(),
        })
    }

    /// The costs since `start`, per completed order.
    pub async fn finish(mut self, completed: u64) -> Value {
        let secs = self.at.elapsed().as_secs_f64();
        let per = |n: f64| {
            if completed == 0 {
                Value::Null
            } else {
                json!((n / completed as f64 * 1000.0).round() / 1000.0)
            }
        };
        let mut report = Map::new();
        report.insert("completed".into(), json!(completed));
        report.insert("seconds".into(), json!((secs * 100.0).round() / 100.0));

        // CPU first, before this probe's own queries add to anything.
        let mut cpu = Map::new();
        let mut postgres_ticks = 0u64;
        for ((name, pid), before) in self.pids.iter().zip(&self.cpu_before) {
            let (Some(b), Some(a)) = (*before, cpu_ticks(*pid)) else {
                continue;
            };
            let ticks = a.saturating_sub(b);
            if name.starts_with("postgres-") {
                postgres_ticks += ticks;
                continue;
            }
            cpu.insert(
                name.clone(),
                json!({ "cpu_secs": ticks as f64 / TICKS_PER_SEC,
                        "cpu_us_per_order": per(ticks as f64 / TICKS_PER_SEC * 1e6) }),
            );
        }
        if self.pg.is_some() {
            cpu.insert(
                "postgres (the nodes' backends)".into(),
                json!({ "cpu_secs": postgres_ticks as f64 / TICKS_PER_SEC,
                        "cpu_us_per_order": per(postgres_ticks as f64 / TICKS_PER_SEC * 1e6) }),
            );
        }
        report.insert("cpu".into(), Value::Object(cpu));

        if let Some(conn) = self.redis.as_mut() {
            match redis::cmd("INFO")
                .arg("commandstats")
                .query_async::<String>(conn)
                .await
            {
                Ok(info) => {
                    let stats = command_stats(&info);
                    let script_usec: u64 = stats
                        .iter()
                        .filter(|(n, _)| SCRIPT_CALLS.contains(&n.as_str()))
                        .map(|(_, (_, u))| *u)
                        .sum();
                    let script_calls: u64 = stats
                        .iter()
                        .filter(|(n, _)| SCRIPT_CALLS.contains(&n.as_str()))
                        .map(|(_, (c, _))| *c)
                        .sum();
                    // Inside scripts or not, every command is counted once
                    // under its own name; scripts' time already holds their
                    // commands', so only the others add to it.
                    let inner: u64 = stats
                        .iter()
                        .filter(|(n, _)| !SCRIPT_CALLS.contains(&n.as_str()))
                        .map(|(_, (c, _))| *c)
                        .sum();
                    let per_command: Map<String, Value> = stats
                        .iter()
                        .map(|(n, (c, u))| {
                            (
                                n.clone(),
                                json!({ "calls": c, "usec": u, "per_order": per(*c as f64) }),
                            )
                        })
                        .collect();
                    report.insert(
                        "redis".into(),
                        json!({
                            "script_calls_per_order": per(script_calls as f64),
                            "script_us_per_order": per(script_usec as f64),
                            "commands_per_order": per(inner as f64),
                            "commands": per_command,
                        }),
                    );
                }
                Err(e) => {
                    report.insert("redis".into(), json!({ "error": e.to_string() }));
                }
            }
        }
        if let (Some(pool), Some(before)) = (&self.pg, self.pg_before) {
            match pg_counts(pool).await {
                Ok(after) => {
                    report.insert(
                        "postgres".into(),
                        json!({
                            "commits": after.commits - before.commits,
                            "commits_per_order": per((after.commits - before.commits) as f64),
                            "rows_inserted_per_order": per((after.inserted - before.inserted) as f64),
                            "rows_updated_per_order": per((after.updated - before.updated) as f64),
                        }),
                    );
                }
                Err(e) => {
                    report.insert("postgres".into(), json!({ "error": e }));
                }
            }
            pool.close().await;
        }
        Value::Object(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_stats_are_read_from_info() {
        let info = "# Commandstats\r\n\
                    cmdstat_evalsha:calls=2000,usec=58000,usec_per_call=29.00,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_hincrby:calls=7000,usec=3500,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n\
                    garbage\r\n";
        let stats = command_stats(info);
        assert_eq!(stats["evalsha"], (2000, 58000));
        assert_eq!(stats["hincrby"], (7000, 3500));
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn cpu_ticks_of_this_process_are_read() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(cpu_ticks(u32::MAX).is_none());
        assert_eq!(redis_pid("# Server\r\nprocess_id:4242\r\n"), Some(4242));
    }
}
