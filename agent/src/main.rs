//! `shoal-agent`: see `shoal_agent::cli`.

fn main() -> std::process::ExitCode {
    shoal_agent::cli::main()
}
