//! The `moechat-server` binary: the command line of [`moechat::cli`], nothing more.

fn main() {
    std::process::exit(moechat::cli::run(std::env::args_os()));
}
