//! `govflow demo`, the README's "run the main job" command: all four journeys end to end through the
//! HTTP API against the sandbox, on a fresh store. It must end with every scripted outcome, no payment
//! made twice, and a store whose every audit chain verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_runs_every_journey_to_its_scripted_outcome() {
    let data = std::env::temp_dir().join(format!("govflow-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let output = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["demo", "--timeout", "120", "--data"])
        .arg(&data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let row = |case: &str| {
        stdout
            .lines()
            .find(|line| line.contains(case))
            .unwrap_or_else(|| panic!("no row for '{case}' in:\n{stdout}"))
            .to_owned()
    };
    for (case, outcome) in [
        ("late: registrar approves", "Birth registered"),
        ("late: SLA passes, supervisor", "Birth registered"),
        ("duplicate birth", "Duplicate: already registered"),
        ("mother not verified", "Rejected: identity not verified"),
        ("child nearly five", "Benefit period ended"),
        ("newborn: benefit stopped", "Benefit stopped"),
        ("first run", "Relief run complete"),
        ("repeated run", "paid 0"),
        ("passes inspection", "Licence issued"),
        ("fails, rectifies, passes", "Licence issued"),
        ("inspection late: SLA path", "Delay escalated"),
    ] {
        let line = row(case);
        assert!(line.contains(outcome), "'{case}' should end in '{outcome}': {line}");
    }
    assert_eq!(
        stdout.lines().filter(|line| line.contains(" on time ") && line.contains("Birth registered")).count(),
        2
    );
    // The newborns' benefits go on (until the child is five): at least two monthly payments were shown.
    let newborn = row("newborn (from the birth)");
    let payments: u64 = newborn
        .split("active: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an active benefit: {newborn}"));
    assert!(payments >= 2, "{newborn}");
    assert!(row("sandbox:").contains("(0 paid twice)"), "{stdout}");
    let verify = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let verified =
        format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && verified.contains(", 0 failed"), "{verified}");
    let _ = std::fs::remove_dir_all(&data);
}
