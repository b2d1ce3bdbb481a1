//! The one Prometheus recorder of a process. `metrics` has one global recorder per process, so
//! every service in the process (an embedder may run OpenExec and ClawLedger side by side) must
//! render the same one: a second recorder would serve a `/metrics` nothing writes to.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The handle of the process-wide recorder, installed on first use. If an embedder installed a
/// recorder of its own first, the services' counters go there, and this handle renders an
/// empty view of its own (said once in the log).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows none of this process's counters");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}
