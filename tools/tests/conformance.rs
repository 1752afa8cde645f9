//! The server transcripts of conformance/ against the moechat-server built beside
//! the runner: every row of PROTOCOL.md sections 1-3.6 that a client can provoke.

#[test]
fn the_server_passes_every_transcript() {
    let stdout = moechat_tools::support::run_beside(
        env!("CARGO_BIN_EXE_moechat-conformance"),
        &["transcripts"],
    );
    let last = stdout.lines().last().unwrap_or_default();
    let (passed, total) = last
        .split_once(" of ")
        .map(|(p, rest)| {
            (
                p.to_string(),
                rest.split(' ').next().unwrap_or("").to_string(),
            )
        })
        .expect("a summary line");
    assert_eq!(passed, total, "{stdout}");
    assert!(total.parse::<u32>().unwrap() >= 15, "{stdout}");
}
