//! Each `sugang demo` scenario run as its user would run it: the built
//! binary starts its own server as a child process, breaks it on purpose and
//! checks every expectation itself. The test asserts the demo's own verdict:
//! exit status 0 and a `VERDICT: PASS` line (the narration is kept in the
//! failure message).

use std::process::Command;
use std::sync::Mutex;

/// The demos measure latencies and timeouts: one at a time, so they do not
/// slow each other down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[track_caller]
fn demo_passes(scenario: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["demo", scenario])
        .env_remove("SUGANG_JWT_SECRET")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.contains("VERDICT:")).collect();
    assert_eq!(verdicts.len(), 1, "exactly one verdict line\n{stdout}\n{stderr}");
    assert!(verdicts[0].contains("VERDICT: PASS — "), "{}\n\n{stdout}\n{stderr}", verdicts[0]);
    assert!(output.status.success(), "a passing verdict exits 0: {:?}\n{stdout}\n{stderr}", output.status);
}

#[test]
fn demo_supervision_restarts_a_panicking_course_and_holds_down_a_failing_one() {
    demo_passes("supervision");
}

#[test]
fn demo_breaker_opens_on_a_slow_gateway_and_a_probe_closes_it() {
    demo_passes("breaker");
}

#[test]
fn demo_replay_delivers_every_shipment_exactly_once_after_a_restart() {
    demo_passes("replay");
}

#[test]
fn demo_crash_keeps_every_acknowledged_enrollment_through_three_sigkills() {
    demo_passes("crash");
}
