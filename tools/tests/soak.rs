//! The short soak: `moechat-soak` against the real server binary for a few seconds
//! with every kind of faulty client. It must report no lost message and no probe
//! failure. The long run (5,000 connections) is `moechat-soak` by hand; see
//! docs/security.md.

#[test]
fn a_short_soak_loses_nothing_and_the_server_keeps_answering() {
    let stdout = moechat_tools::support::run_beside(
        env!("CARGO_BIN_EXE_moechat-soak"),
        &[
            "--connections",
            "300",
            "--seconds",
            "3",
            "--honest",
            "20",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line, got {stdout:?} ({e})"));
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["probe_failures"], 0, "{report}");
    assert!(
        report["acknowledged"].as_u64().unwrap() > 100,
        "honest clients chatted: {report}"
    );
    assert_eq!(report["connections"], 300);
}
