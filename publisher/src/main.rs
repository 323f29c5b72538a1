//! `shoal-publisher`: see `shoal_publisher::cli`.

fn main() -> std::process::ExitCode {
    shoal_publisher::cli::main()
}
