//! Each `sugang demo` scenario run as its user would run it: the built
//! binary starts its own server as a child process, breaks it on purpose and
//! checks every expectation itself. The test asserts the demo's own verdict
//! (exit status 0 and a `VERDICT: PASS` line), and that the narration is
//! true where it can be checked from the outside: the timeline is printed
//! in time order, every ✓ comparison holds for the numbers it prints,
//! nothing the server logged is summarised away, and each demo's story
//! (breaker transitions in order, a kill with enrollments in flight, a
//! switch that moved the read model) is there with its numbers. The
//! narration is kept in every failure message.

use std::process::Command;
use std::sync::Mutex;

/// The demos measure latencies and timeouts: one at a time, so they do not
/// slow each other down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `sugang demo <scenario>`, asserts its passing verdict and the
/// checks every demo's narration must pass; its standard output.
#[track_caller]
fn demo_passes(scenario: &str) -> String {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["demo", scenario])
        .env_remove("SUGANG_JWT_SECRET")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let verdicts: Vec<&str> = stdout.lines().filter(|l| l.contains("VERDICT:")).collect();
    assert_eq!(verdicts.len(), 1, "exactly one verdict line\n{stdout}\n{stderr}");
    assert!(verdicts[0].contains("VERDICT: PASS — "), "{}\n\n{stdout}\n{stderr}", verdicts[0]);
    assert!(output.status.success(), "a passing verdict exits 0: {:?}\n{stdout}\n{stderr}", output.status);
    in_time_order(&stdout);
    comparisons_hold(&stdout);
    assert!(!stdout.contains("more kinds of"), "nothing the server logged is summarised away\n{stdout}");
    stdout
}

/// The `[  1.234s]` stamp of a timeline line.
fn stamp(line: &str) -> Option<f64> {
    line.strip_prefix('[')?.split_once("s]")?.0.trim().parse().ok()
}

/// Every timeline line is printed after the ones that happened before it.
#[track_caller]
fn in_time_order(stdout: &str) {
    let mut last = (0.0, "");
    for line in stdout.lines() {
        if let Some(at) = stamp(line) {
            assert!(at >= last.0, "printed out of time order:\n{}\n{line}\n\n{stdout}", last.1);
            last = (at, line);
        }
    }
}

/// A number as printed, without the punctuation around it.
fn number(token: &str) -> Option<u64> {
    token.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok()
}

/// Every `A ≥ B`, `A < B` and `A = B` (units such as `ms` allowed after
/// each number) on a ✓ line holds for the numbers printed.
#[track_caller]
fn comparisons_hold(stdout: &str) {
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('✓')) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for (i, op) in tokens.iter().enumerate() {
            if !["≥", "<", "="].contains(op) || i == 0 {
                continue;
            }
            let left = if tokens[i - 1] == "ms" && i >= 2 { tokens[i - 2] } else { tokens[i - 1] };
            let (Some(a), Some(b)) = (number(left), tokens.get(i + 1).and_then(|t| number(t))) else { continue };
            let holds = match *op {
                "≥" => a >= b,
                "<" => a < b,
                _ => a == b,
            };
            assert!(holds, "a ✓ next to a false comparison ({a} {op} {b}):\n{line}\n\n{stdout}");
        }
    }
}

/// The number before `marker` in `line` (`16 were in flight` → 16).
fn number_before(line: &str, marker: &str) -> Option<u64> {
    number(line.split(marker).next()?.split_whitespace().last()?)
}

#[test]
fn demo_supervision_restarts_a_panicking_course_and_holds_down_a_failing_one() {
    let out = demo_passes("supervision");
    assert!(
        out.contains("/metrics and /admin/actors agree on the course restarts")
            && out.contains("/metrics and /admin/actors agree on the restarts"),
        "the restart counts are cross-checked with /metrics\n{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("server log:") && l.contains("held down")),
        "the hold-down the server logged is shown\n{out}"
    );
}

#[test]
fn demo_breaker_opens_on_a_slow_gateway_and_a_probe_closes_it() {
    let out = demo_passes("breaker");
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("breaker transitions, from the server's log, in time order:"))
        .unwrap_or_else(|| panic!("the transitions are listed\n{out}"));
    let listed: Vec<(f64, String)> = lines[header + 1..]
        .iter()
        .map_while(|l| {
            let (at, rest) = l.trim().split_once("s  ")?;
            let transition = rest.split("  (").next()?.to_owned();
            Some((at.parse().ok()?, transition))
        })
        .collect();
    let path: Vec<&str> = listed.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(path, ["closed → open", "open → halfOpen", "halfOpen → closed"], "every transition, in order\n{out}");
    assert!(listed.windows(2).all(|w| w[0].0 <= w[1].0), "the transitions' times are in order\n{out}");
    let opened = lines.iter().position(|l| l.contains("server log:") && l.contains("payment breaker opened"));
    let healed = lines.iter().position(|l| l.contains("the gateway is healthy again"));
    assert!(
        matches!((opened, healed), (Some(o), Some(h)) if o < h),
        "the breaker's opening is narrated before the gateway heals\n{out}"
    );
}

#[test]
fn demo_replay_delivers_every_shipment_exactly_once_after_a_restart() {
    let out = demo_passes("replay");
    let moved = out
        .lines()
        .find(|l| l.contains("delivery is started: the read model moved from"))
        .unwrap_or_else(|| panic!("the start switch is checked by its effect\n{out}"));
    let (from, to) = (number_before(moved, " to "), moved.split(" to ").nth(1).and_then(number));
    assert!(matches!((from, to), (Some(a), Some(b)) if b > a), "the read model moved: {moved}\n{out}");
}

#[test]
fn demo_crash_keeps_every_acknowledged_enrollment_through_three_sigkills() {
    let out = demo_passes("crash");
    let in_flight: Vec<u64> =
        out.lines().filter(|l| l.contains("SIGKILL pid")).filter_map(|l| number_before(l, " were in flight")).collect();
    assert_eq!(in_flight.len(), 3, "three kills, each with its enrollments in flight\n{out}");
    assert!(in_flight.iter().all(|n| *n >= 1), "every kill interrupts enrollments in progress {in_flight:?}\n{out}");
    let compensated: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("server log:") && l.contains("sagas interrupted by the last stop"))
        .filter_map(|l| number(l.split("count=").nth(1)?.split('}').next()?))
        .collect();
    assert_eq!(compensated.len(), 3, "each restart finds interrupted sagas\n{out}");
    assert!(compensated.iter().all(|n| *n >= 1), "each kill caught sagas mid-flight {compensated:?}\n{out}");
}

#[test]
fn demo_gate_shuffles_at_the_opening_holds_the_rate_and_serves_places_in_order() {
    let out = demo_passes("gate");
    assert!(out.contains("428 Precondition Required"), "no ticket, no enrollment\n{out}");
    assert!(out.contains("take tickets before the opening: 201×100"), "{out}");
    let measured: Vec<&str> = out.lines().filter(|l| l.contains("measured from their admittedAt")).collect();
    assert_eq!(measured.len(), 2, "the rate before and after the live change\n{out}");
    assert!(out.contains("(0 admitted before an earlier place)"), "{out}");
    assert!(out.contains("30 enrolled, 70 found the course full"), "{out}");
}

#[test]
#[should_panic(expected = "a ✓ next to a false comparison")]
fn a_check_mark_next_to_a_false_comparison_is_caught() {
    comparisons_hold("           ✓ it stayed open for its reset timeout (1999 ms ≥ 2000 ms)\n");
}

#[test]
#[should_panic(expected = "printed out of time order")]
fn a_line_printed_after_a_later_one_is_caught() {
    in_time_order("[  4.000s] the gateway is healthy again\n[  2.711s] breaker: closed → open\n");
}

#[test]
fn true_comparisons_and_ordered_lines_pass_the_checks() {
    comparisons_hold("           ✓ it stayed open (2004 ms ≥ 2000 ms); 6 ms < 200 ms; (14 = 14)\n");
    in_time_order("[  2.711s] breaker: closed → open\n           a note\n[  4.000s] healed\n");
}

#[test]
fn demo_waitlist_enrolls_the_first_in_line_at_once_and_passes_a_declined_seat_on() {
    let out = demo_passes("waitlist");
    for line in [
        "✓ Han is told the course is full",
        "✓ Park, first in line, is enrolled",
        "✓ Choi's declined card fails the entry",
        "✓ the seat passed on to Jung, who is enrolled",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert!(out.contains("server log: INFO  seat given to the first in line"), "the promotion is narrated\n{out}");
}
