//! User-facing progress for long operations: an indicatif bar on a terminal, plain
//! lines otherwise (CI logs, pipes). This is output for the person running the command,
//! not logging.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
pub use shoal_cli::human_bytes;

/// Runs `work` while showing the growth of `counter` towards `total` bytes under `label`.
/// Returns the work's result and how long it took.
pub fn track<T: Send>(
    label: &str,
    total: u64,
    quiet: bool,
    work: impl FnOnce(&AtomicU64) -> T + Send,
) -> (T, Duration) {
    let counter = AtomicU64::new(0);
    let start = Instant::now();
    let tty = !quiet && std::io::stderr().is_terminal();
    if !quiet && !tty {
        eprintln!("hashing {label} ({})", human_bytes(total));
    }
    let out = std::thread::scope(|s| {
        let worker = s.spawn(|| work(&counter));
        if tty {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            while !worker.is_finished() {
                bar.set_position(counter.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        }
        worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    (out, start.elapsed())
}
