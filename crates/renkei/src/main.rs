use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before the runtime starts its threads: they inherit the policy (sched.rs says why).
    renkei::sched::prefer_throughput();
    let cli = renkei::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(renkei::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
