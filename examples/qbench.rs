fn main() {
    let n = 768 * 3072;
    let mut state = 1u64;
    let lcg: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * 0.04
        })
        .collect();
    let sin: Vec<f32> = (0..n).map(|k| ((k as f32) * 0.618).sin()).collect();
    let small: Vec<f32> = sin.iter().map(|v| v * 0.02).collect();
    for (name, v) in [("lcg", &lcg), ("sin", &sin), ("sin*0.02", &small)] {
        let t = std::time::Instant::now();
        let mut s = 0.0;
        for _ in 0..10 {
            s += mdeploy::quantize::weights::quantize_symmetric(v, &[768, 3072], Some(1)).sqnr_db;
        }
        println!(
            "{name}: {:.1} ns/value ({s})",
            t.elapsed().as_nanos() as f64 / (10.0 * n as f64)
        );
    }
}
