//! A bare agent process for the bench crate's own tests (`dipc agent` is
//! the same loop inside the `dipc` binary): answers the agent protocol of
//! `dipc_bench::agent` on stdin/stdout.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    match dipc_bench::agent::serve(std::io::stdin().lock(), std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dipc-bench-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
