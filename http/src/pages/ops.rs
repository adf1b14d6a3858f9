//! The operator console (`/ops`): the supervision tree, the payment
//! breaker, subscriber lag, the journal's group size and commit latency,
//! enrollments per second and their latency as small charts, and the fault injections of
//! `/admin/faults/*` as buttons.
//!
//! A shell only: the script reads `/admin/*` and `/metrics` with the
//! operator's token (admins only, as the API says) about once a second.
//! The waiting room's live queue and controls are `gate`'s. On a cluster
//! node, a "Cluster" section too (`/admin/cluster`: the nodes, the
//! primary's lease, the stream); embedded, none.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Section, Shell};
use crate::AppState;

/// `GET /ops`.
pub(crate) async fn page(State(state): State<AppState>, shell: Shell) -> Response {
    let ctx = &shell.ctx;
    let cluster = state.cluster.is_some();
    let main = html! {
        h1 { (ctx.t("ops.title")) }
        p #need-who.hint role="status" {}
        div.grid {
            section.card aria-labelledby="breaker-title" {
                h2 #breaker-title { (ctx.t("ops.breaker")) }
                p { span #breaker-state.badge data-state="unknown" { "-" } }
                dl {
                    dt { (ctx.t("ops.failures")) } dd #breaker-failures { "-" }
                    dt { (ctx.t("ops.transitions")) } dd #breaker-transitions { "-" }
                    dt { (ctx.t("ops.inFlight")) } dd #breaker-in-flight { "-" }
                    dt { (ctx.t("ops.retryIn")) } dd #breaker-retry { "-" }
                    dt { (ctx.t("ops.gatewayState")) } dd #gateway-state { "-" }
                }
            }
            section.card aria-labelledby="journal-title" {
                h2 #journal-title { (ctx.t("ops.journal")) }
                dl {
                    dt { (ctx.t("ops.groupSize")) } dd #journal-group { "-" }
                    dt { (ctx.t("ops.commitMs")) } dd #journal-commit { "-" }
                    dt { (ctx.t("ops.lastSeq")) } dd #journal-seq { "-" }
                }
            }
            section.card.wide aria-labelledby="rate-title" {
                h2 #rate-title { (ctx.t("ops.rate")) }
                svg #rate-chart.chart viewBox="0 0 300 80" preserveAspectRatio="none" role="img" aria-labelledby="rate-title rate-now" {}
                p #rate-now aria-live="off" { "-" }
            }
            section.card.wide aria-labelledby="latency-title" {
                h2 #latency-title { (ctx.t("ops.latencyChart")) }
                svg #latency-chart.chart viewBox="0 0 300 80" preserveAspectRatio="none" role="img"
                    aria-labelledby="latency-title latency-now" {}
                p #latency-now aria-live="off" { "-" }
            }
        }
        @if cluster {
            section #cluster aria-labelledby="cluster-title" {
                h2 #cluster-title { (ctx.t("ops.cluster")) }
                dl {
                    dt { (ctx.t("ops.clusterHere")) } dd #cluster-here { "-" }
                    dt { (ctx.t("ops.clusterPrimary")) } dd #cluster-primary { "-" }
                    dt { (ctx.t("ops.clusterLease")) } dd #cluster-lease { "-" }
                    dt { (ctx.t("ops.clusterStream")) } dd #cluster-stream { "-" }
                }
                (ctx.script_table("cluster-nodes", &["ops.clusterNode", "ops.clusterRole", "ops.clusterApplied", "ops.lag", "ops.clusterHeartbeat", "ops.clusterUnits"]))
            }
        }
        section aria-labelledby="tree-title" {
            h2 #tree-title { (ctx.t("ops.tree")) }
            (ctx.script_table("tree", &["ops.node", "ops.alive", "ops.live", "ops.restarts", "ops.heldDown"]))
        }
        section aria-labelledby="subscribers-title" {
            h2 #subscribers-title { (ctx.t("ops.subscribers")) }
            (ctx.script_table("subscribers", &["ops.node", "ops.alive", "ops.lag", "ops.offset", "ops.workers", "ops.restarts", "course.action"]))
        }
        section aria-labelledby="faults-title" {
            h2 #faults-title { (ctx.t("ops.faults")) }
            div.grid {
                fieldset.card {
                    legend { (ctx.t("ops.gateway")) }
                    div.actions {
                        button type="button" #gateway-down.danger { (ctx.t("ops.gatewayDown")) }
                        button type="button" #gateway-up { (ctx.t("ops.gatewayUp")) }
                    }
                    label for="gateway-latency" { (ctx.t("ops.latency")) }
                    input #gateway-latency type="number" min="0" max="60000" step="1" value="0" inputmode="numeric";
                    button type="button" #gateway-latency-set { (ctx.t("ops.setLatency")) }
                }
                fieldset.card {
                    legend { (ctx.t("ops.coursePanic")) }
                    label for="panic-course" { (ctx.t("ops.courseId")) }
                    input #panic-course type="number" min="1" step="1" inputmode="numeric";
                    button type="button" #panic-button.danger { (ctx.t("ops.panic")) }
                }
            }
            p #fault-result role="status" aria-live="polite" {}
        }
        (super::gate::controls(ctx))
    };
    shell.render(Section::Ops, "ops.title", main)
}
