//! A seconds-long `moechat-bench` run against the real server binary, to keep the
//! instrument working: every workload must finish with nothing lost, doubled or
//! out of order. Figures are not checked here; they belong in docs/BENCHMARKS.md.
//! Redis and NATS are compared only where they are installed, so the run is
//! limited to MoeChat.

#[test]
fn a_tiny_benchmark_run_delivers_everything_exactly_once() {
    let args = [
        &["--targets", "moechat"][..],
        SMALL,
        &[
            "--idle",
            "50",
            "--login-seconds",
            "0.5",
            "--login-workers",
            "2",
        ],
    ]
    .concat();
    let stdout = moechat_tools::support::run_beside(env!("CARGO_BIN_EXE_moechat-bench"), &args);
    let lines = json_lines(&stdout);
    let workloads: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["w1", "w2", "w2_tenth", "w3", "w4"]);
    for line in &lines[..3] {
        assert_exactly_once(line);
    }
    assert!(
        lines[3]["figures"]["bytes_per_connection"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let logins = &lines[4]["figures"];
    assert!(
        logins["password"]["logins"].as_u64().unwrap() > 0,
        "{logins}"
    );
    assert!(
        logins["session"]["logins"].as_u64().unwrap() > 0,
        "{logins}"
    );
}

#[test]
fn the_websocket_mode_delivers_everything_exactly_once() {
    let args = [
        &["--targets", "moechat-ws", "--workloads", "w1,w2"][..],
        SMALL,
    ]
    .concat();
    let stdout = moechat_tools::support::run_beside(env!("CARGO_BIN_EXE_moechat-bench"), &args);
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines {
        assert_eq!(line["target"], "moechat-ws");
        assert_exactly_once(line);
        assert!(line["figures"]["server_cpu_s"].as_f64().is_some(), "{line}");
    }
}

/// A run of seconds: one of each workload, few connections and messages.
const SMALL: &[&str] = &[
    "--runs",
    "1",
    "--json",
    "--pairs",
    "3",
    "--messages",
    "300",
    "--window",
    "16",
    "--receivers",
    "10",
    "--broadcasts",
    "30",
    "--rate",
    "300",
];

/// One JSON value per line of the tool's output.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Every message of a W1 or W2 run arrived once, in order, without errors.
fn assert_exactly_once(line: &serde_json::Value) {
    let f = &line["figures"];
    assert_eq!(f["lost"], 0, "{line}");
    assert_eq!(f["duplicates"], 0, "{line}");
    assert_eq!(f["out_of_order_gaps"], 0, "{line}");
    assert_eq!(f["errors"], 0, "{line}");
    assert_eq!(f["delivered"], f["expected"], "{line}");
}
