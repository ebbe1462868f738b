//! Many invocations of one Lua script in one call. During a rush every buy
//! runs the admission script and every completed order the confirmation; the
//! fixed cost of a call (parsing, dispatch, a round trip, a task wake-up on
//! each side) outweighed the script's own work, so concurrent calls of a
//! node are queued and sent together: the script runs once per call inside a
//! loop, in queue order, atomically like the single calls it replaces.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, ToRedisArgs, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::InventoryError;

/// Calls sent together at most (a batch holds Redis for its whole run).
const MAX_BATCH: usize = 128;
/// Batches on the wire at once; while they are out, the queue grows into
/// the next batch.
const IN_FLIGHT: usize = 4;
const QUEUE: usize = 8192;

/// The loop around a script's body: the body becomes a function whose
/// parameters shadow `KEYS` and `ARGV`, so the single-call script is reused
/// verbatim. ARGV[1] and ARGV[2] give each call's key and argument counts.
fn batched(body: &str) -> String {
    format!(
        "local function one(KEYS, ARGV)\n{body}\nend\n\
         local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])\n\
         local out = {{}}\n\
         for c = 0, (#ARGV - 2) / na - 1 do\n\
         \x20 local k, a = {{}}, {{}}\n\
         \x20 for i = 1, nk do k[i] = KEYS[c * nk + i] end\n\
         \x20 for i = 1, na do a[i] = ARGV[2 + c * na + i] end\n\
         \x20 out[c + 1] = one(k, a)\n\
         end\n\
         return out\n"
    )
}

/// One invocation's keys and arguments.
#[derive(Default)]
pub struct Call {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub fn key(mut self, key: String) -> Self {
        self.keys.push(key);
        self
    }

    pub fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

type Reply = oneshot::Sender<Result<Value, InventoryError>>;

struct Job {
    /// Calls of one sale go together: their keys share its hash slot.
    sale: Uuid,
    call: Call,
    reply: Reply,
}

/// A script whose calls are batched. Cheap to share; the batching task ends
/// when the last handle is dropped.
pub struct BatchedScript {
    tx: mpsc::Sender<Job>,
}

impl BatchedScript {
    pub fn new(body: &str, conn: ConnectionManager) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(Arc::new(Script::new(&batched(body))), conn, rx));
        BatchedScript { tx }
    }

    /// Runs the script once for `call` (all of whose keys are `sale`'s) and
    /// returns its reply.
    pub async fn call(&self, sale: Uuid, call: Call) -> Result<Value, InventoryError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || InventoryError::Protocol("the script batcher has stopped".into());
        self.tx
            .send(Job { sale, call, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(script: Arc<Script>, conn: ConnectionManager, mut rx: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let mut batch = std::mem::take(&mut jobs);
        jobs.reserve(MAX_BATCH);
        let (script, mut conn) = (script.clone(), conn.clone());
        tokio::spawn(async move {
            // Stable: calls of one sale keep their queue order.
            batch.sort_by_key(|j| j.sale);
            while !batch.is_empty() {
                let sale = batch[0].sale;
                let n = batch.iter().take_while(|j| j.sale == sale).count();
                let group: Vec<Job> = batch.drain(..n).collect();
                send(&script, &mut conn, group).await;
            }
            drop(slot);
        });
    }
}

/// One script call for `group`; every job gets its own reply, or the error.
async fn send(script: &Script, conn: &mut ConnectionManager, group: Vec<Job>) {
    let (nk, na) = (group[0].call.keys.len(), group[0].call.args.len());
    let (calls, replies): (Vec<Call>, Vec<Reply>) =
        group.into_iter().map(|j| (j.call, j.reply)).unzip();
    if na == 0
        || calls
            .iter()
            .any(|c| c.keys.len() != nk || c.args.len() != na)
    {
        return fail(replies, "batched calls differ in shape");
    }
    let mut invocation = script.prepare_invoke();
    invocation.arg(nk).arg(na);
    for c in &calls {
        for k in &c.keys {
            invocation.key(k);
        }
        for a in &c.args {
            invocation.arg(a.as_slice());
        }
    }
    let result: Result<Vec<Value>, RedisError> = invocation.invoke_async(conn).await;
    match result {
        Ok(values) if values.len() == replies.len() => {
            for (reply, v) in replies.into_iter().zip(values) {
                let _ = reply.send(Ok(v));
            }
        }
        Ok(_) => fail(replies, "a batch's reply count differs from its calls"),
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(InventoryError::Redis(e.clone())));
            }
        }
    }
}

fn fail(replies: Vec<Reply>, why: &str) {
    for reply in replies {
        let _ = reply.send(Err(InventoryError::Protocol(why.into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many concurrent calls, several sales: each gets its own reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_call_gets_its_own_reply() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url).expect("redis url");
        let conn = ConnectionManager::new(client).await.expect("redis");
        // Writes nothing: the reply echoes the call, with a local of the body.
        let body = "local twice = ARGV[2] * 2\nreturn {KEYS[1], ARGV[1], tostring(twice)}";
        let script = Arc::new(BatchedScript::new(body, conn));
        let sales: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..2000u32 {
            let (script, sale) = (script.clone(), sales[i as usize % 3]);
            tasks.spawn(async move {
                let call = Call::default()
                    .key(format!("k:{{{sale}}}:{i}"))
                    .arg(format!("a{i}"))
                    .arg(i);
                let v = script.call(sale, call).await.expect("reply");
                let got: Vec<String> = redis::from_redis_value(v).expect("strings");
                assert_eq!(
                    got,
                    [
                        format!("k:{{{sale}}}:{i}"),
                        format!("a{i}"),
                        (2 * i).to_string()
                    ]
                );
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("call");
        }
        // A call of another shape fails alone; it does not poison the script.
        let bad = script.call(sales[0], Call::default().key("x".into())).await;
        assert!(matches!(bad, Err(InventoryError::Protocol(_))));
    }
}
