//! The waiting room on the pages: the student's waiting room on the
//! catalog (shown when `POST /classes` answers 428: a ticket is taken, its
//! position and ETA shown and kept across a reload, then the enrollment is
//! sent on with the admission) and the operator's gate controls on `/ops`
//! (the live queue, and the settings of `PUT /admin/gate`).
//!
//! Markup only; `assets/gate.js` does the work through the API with the
//! person's own token, so the API's checks decide what each person sees.

use maud::{Markup, html};

use super::PageContext;

/// The student's waiting room, hidden until the gate sends them there.
pub(super) fn waiting_room(ctx: &PageContext) -> Markup {
    html! {
        section #waiting-room aria-labelledby="waiting-title" hidden {
            h2 #waiting-title tabindex="-1" { (ctx.t("gate.title")) }
            p.hint { (ctx.t("gate.explain")) }
            dl {
                dt { (ctx.t("gate.course")) } dd #queue-course { "-" }
                dt { (ctx.t("gate.position")) } dd #queue-position { "-" }
                dt { (ctx.t("gate.eta")) } dd #queue-eta { "-" }
            }
            p #queue-status role="status" aria-live="polite" data-status="" {}
            div.actions {
                button type="button" #queue-leave { (ctx.t("gate.leave")) }
            }
        }
        script src="/assets/gate.js" defer {}
    }
}

/// The operator's gate: the live queue and its settings.
pub(super) fn controls(ctx: &PageContext) -> Markup {
    html! {
        section #gate-controls aria-labelledby="gate-controls-title" {
            h2 #gate-controls-title { (ctx.t("gate.title")) }
            div.grid {
                div.card {
                    dl {
                        dt { (ctx.t("gate.state")) } dd #gate-state { "-" }
                        dt { (ctx.t("gate.waitingCount")) } dd #gate-waiting { "-" }
                        dt { (ctx.t("gate.admittedTotal")) } dd #gate-admitted { "-" }
                        dt { (ctx.t("gate.admittedPerSecond")) } dd #gate-rate-now { "-" }
                        dt { (ctx.t("gate.oldestWait")) } dd #gate-oldest { "-" }
                    }
                }
                form.card #gate-form {
                    label.check {
                        input #gate-enabled name="enabled" type="checkbox";
                        " " (ctx.t("gate.enabled"))
                    }
                    label for="gate-rate" { (ctx.t("gate.rate")) }
                    input #gate-rate name="admitPerSecond" type="number" min="1" max="1000000" step="1" inputmode="numeric" required;
                    label for="gate-opens" { (ctx.t("gate.opensAt")) }
                    input #gate-opens name="opensAt" type="datetime-local" step="1";
                    label for="gate-ttl" { (ctx.t("gate.ttl")) }
                    input #gate-ttl name="admissionTtlSecs" type="number" min="1" max="86400" step="1" inputmode="numeric" required;
                    div.actions { button type="submit" #gate-apply { (ctx.t("gate.apply")) } }
                }
            }
            p #gate-result role="status" aria-live="polite" {}
        }
        script src="/assets/gate.js" defer {}
    }
}
