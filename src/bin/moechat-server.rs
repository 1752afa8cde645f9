//! The `moechat-server` binary: the command line of [`moechat::cli`], nothing more.

// Less memory per connection than the system allocator (W3 in docs/BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(moechat::cli::run(std::env::args_os()));
}
