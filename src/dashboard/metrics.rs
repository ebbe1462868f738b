//! Prometheus metrics of this node (`GET /metrics`), through the `metrics`
//! crate: one recorder per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use (several nodes in one test process
/// share it); `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("lychee_batch_size".into()), &sizes)
                })
                .map(PrometheusBuilder::build_recorder);
            let recorder = match recorder {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .as_ref()
}

/// Help texts, and every series present from the start (at zero), so
/// dashboards and alerts see them before the first event.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "lychee_ws_open_sockets",
        "WebSocket connections open on this node"
    );
    describe_counter!("lychee_ws_frames_in_total", "Client messages received");
    describe_counter!(
        "lychee_ws_frames_out_total",
        "WebSocket writes (a frame or a batch)"
    );
    describe_counter!(
        "lychee_fanout_deliveries_total",
        "Events delivered to sockets"
    );
    describe_counter!(
        "lychee_lagged_viewers_total",
        "Times a socket fell behind and lost chat"
    );
    describe_counter!(
        "lychee_buy_attempts_total",
        "Buy attempts by outcome (contract code or created)"
    );
    describe_histogram!(
        "lychee_buy_latency_seconds",
        Unit::Seconds,
        "Buy latency, REST and WebSocket"
    );
    describe_counter!(
        "lychee_orders_completed_total",
        "Orders committed as completed"
    );
    describe_counter!(
        "lychee_sold_out_fast_path_total",
        "Buy attempts answered sold_out without Redis"
    );
    describe_counter!("lychee_chat_messages_total", "Chat messages accepted");
    describe_histogram!("lychee_batch_size", "Orders per batch-writer transaction");
    describe_histogram!(
        "lychee_batch_commit_seconds",
        Unit::Seconds,
        "Batch-writer commit latency"
    );
    describe_counter!("lychee_redis_errors_total", "Redis operations that failed");
    describe_counter!("lychee_db_errors_total", "Database operations that failed");
    metrics::gauge!("lychee_ws_open_sockets").set(0.0);
    for c in [
        "lychee_ws_frames_in_total",
        "lychee_ws_frames_out_total",
        "lychee_fanout_deliveries_total",
        "lychee_lagged_viewers_total",
        "lychee_orders_completed_total",
        "lychee_sold_out_fast_path_total",
        "lychee_chat_messages_total",
        "lychee_redis_errors_total",
        "lychee_db_errors_total",
    ] {
        metrics::counter!(c).increment(0);
    }
}
