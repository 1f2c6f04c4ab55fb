//! `cargo bench --bench cold_start`: the first `runner::run` in a fresh process, against the
//! first raw `LocalExecutor` + `block_on` and the first tokio current-thread runtime. Each sample
//! is a new child process (this binary started again) that times its first run only.

use std::process::Command;
use std::time::Instant;

const ROLE: &str = "RUNNER_COLD_START_VARIANT";

fn child(variant: &str) {
    let t = Instant::now();
    match variant {
        "runner" => {
            runner::run(async { 1 }).expect("run");
        }
        "raw" => {
            let ex = async_executor::LocalExecutor::new();
            async_io::block_on(ex.run(async { 1 }));
        }
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("tokio");
            rt.block_on(async { 1 });
        }
    }
    println!("{}", t.elapsed().as_nanos());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Ok(variant) = std::env::var(ROLE) {
        return child(&variant);
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching { 31 } else { 1 };
    let exe = std::env::current_exe().expect("own path");
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut vs_raw = Vec::new();
    let mut vs_tokio = Vec::new();
    for _ in 0..rounds {
        let mut round = [0.0; 3];
        for (i, variant) in ["runner", "raw", "tokio"].iter().enumerate() {
            let out = Command::new(&exe)
                .env(ROLE, variant)
                .output()
                .expect("child runs");
            let ns: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("child prints ns");
            round[i] = ns;
            times[i].push(ns);
        }
        vs_raw.push(round[0] / round[1]);
        vs_tokio.push(round[0] / round[2]);
    }
    let us = |v: &Vec<f64>| median(v.clone()) / 1000.0;
    println!("cold start, first run in a fresh process ({rounds} processes each, medians):\n");
    println!("| workload | runner | raw smol | tokio current-thread | runner/raw | runner/tokio |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| cold start (first run in a process) | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} | {:.2} |",
        us(&times[0]),
        us(&times[1]),
        us(&times[2]),
        median(vs_raw),
        median(vs_tokio)
    );
}
