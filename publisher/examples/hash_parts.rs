//! Measures the parts of `release` hashing on one file: SHA-256 alone, FastCDC cut
//! points alone, and the full parallel chunk-and-hash. Used for docs/BENCHMARKS.md:
//!   cargo run --release -p shoal-publisher --example hash_parts -- FILE
use std::sync::atomic::AtomicU64;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: hash_parts FILE");
    let data = std::fs::read(&path).expect("read file");
    let gib = data.len() as f64 / (1u64 << 30) as f64;
    let rate = |label: &str, f: &dyn Fn()| {
        let t = Instant::now();
        f();
        let s = t.elapsed().as_secs_f64();
        println!("{label:<28} {s:.3} s  {:.2} GiB/s", gib / s);
    };
    rate("sha256, one core", &|| {
        std::hint::black_box(shoal_protocol::Digest::of(&data));
    });
    rate("fastcdc cut points, one core", &|| {
        std::hint::black_box(shoal_protocol::chunk::cut_points(&data).count());
    });
    rate("parallel chunk + hash", &|| {
        std::hint::black_box(shoal_publisher::hashing::hash_bytes(
            &data,
            &AtomicU64::new(0),
        ));
    });
}
