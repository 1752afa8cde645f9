//! The instruments of MoeChat's docs: `moechat-bench` (docs/BENCHMARKS.md),
//! `moechat-soak` (docs/security.md; its `--login-burst` mode is the login burst of
//! docs/BENCHMARKS.md) and the `sqlite_ceiling` example. Not shipped: the library and
//! `moechat-server` build without this crate.
//!
//! This library holds what the tools share: starting a real `moechat-server`
//! process, reading process memory, percentiles; and the runners of
//! `conformance/` (`moechat-conformance`): the pattern matcher, the transcript
//! replayer and the scripted fake server.

pub mod burst;
pub mod conformance;
pub mod play;
pub mod seed;
pub mod support;
pub mod transcript;
