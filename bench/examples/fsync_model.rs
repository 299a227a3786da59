//! Model of the broker's disk work at 100 MB/s: 30 KB writes arriving at 3,300/s into a
//! file whose blocks exist (zeros written ahead: the runway), each acknowledged after an
//! fdatasync that covers it. Modes:
//!   serial:     one flusher; a write arriving while an fsync runs waits for it, then the
//!               flusher's next fsync covers every write that arrived meanwhile (group commit)
//!   concurrent: every write starts its own fdatasync at once on a pool of K threads
//! Prints latency (arrival -> covered by a completed fsync) p50/p99/p999 in ms, three
//! alternating rounds. BENCHMARKS.md, "Two fsyncs at once".
//!
//!   cargo run --release -p sluice-bench --example fsync_model -- DIR_ON_THE_DATA_DISK

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const WRITE: usize = 30_000;
const N: usize = 6_000;
const RATE: f64 = 3_300.0;

fn prepare(path: &str) -> std::fs::File {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..((WRITE * N) >> 20) + 2 {
        f.write_all(&zeros).unwrap();
    }
    f.sync_all().unwrap();
    f
}

fn pct(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.3} p99 {:.3} p999 {:.3} ms",
        p(0.5),
        p(0.99),
        p(0.999)
    )
}

/// Writes the N records into `f` at RATE, each when due (a thread sleep), calling
/// `written(i, due)` after record `i` is written.
fn write_paced(f: &std::fs::File, mut written: impl FnMut(usize, Instant)) {
    let buf = vec![7u8; WRITE];
    let start = Instant::now();
    for i in 0..N {
        let due = start + Duration::from_secs_f64(i as f64 / RATE);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        f.write_all_at(&buf, (i * WRITE) as u64).unwrap();
        written(i, due);
    }
}

fn serial(path: &str) -> Vec<f64> {
    let f = Arc::new(prepare(path));
    // state: (written count, durable count)
    let st = Arc::new((Mutex::new((0usize, 0usize)), Condvar::new()));
    let mut arrivals = vec![Instant::now(); N];
    let done_at = Arc::new(Mutex::new(vec![Instant::now(); N]));
    let (f2, st2, done2) = (f.clone(), st.clone(), done_at.clone());
    let flusher = std::thread::spawn(move || loop {
        let target = {
            let (lock, cv) = &*st2;
            let mut g = lock.lock().unwrap();
            while g.0 == g.1 {
                g = cv.wait(g).unwrap();
            }
            g.0
        };
        f2.sync_data().unwrap();
        let now = Instant::now();
        let (lock, _) = &*st2;
        let mut g = lock.lock().unwrap();
        let mut d = done2.lock().unwrap();
        for i in g.1..target {
            d[i] = now;
        }
        g.1 = target;
        if target == N {
            return;
        }
    });
    write_paced(&f, |i, due| {
        arrivals[i] = due;
        let (lock, cv) = &*st;
        lock.lock().unwrap().0 = i + 1;
        cv.notify_one();
    });
    flusher.join().unwrap();
    let d = done_at.lock().unwrap();
    (0..N)
        .map(|i| (d[i] - arrivals[i]).as_secs_f64() * 1000.0)
        .collect()
}

fn concurrent(path: &str, threads: usize) -> Vec<f64> {
    let f = Arc::new(prepare(path));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let out = Arc::new(Mutex::new(vec![0f64; N]));
    let mut pool = Vec::new();
    for _ in 0..threads {
        let (rx, f, out) = (rx.clone(), f.clone(), out.clone());
        pool.push(std::thread::spawn(move || loop {
            let job = rx.lock().unwrap().recv();
            let Ok((i, due)) = job else { return };
            f.sync_data().unwrap();
            out.lock().unwrap()[i] = due.elapsed().as_secs_f64() * 1000.0;
        }));
    }
    write_paced(&f, |i, due| tx.send((i, due)).unwrap());
    drop(tx);
    for t in pool {
        t.join().unwrap();
    }
    let v = out.lock().unwrap().clone();
    v
}

fn main() {
    // The file goes where the broker's data would: the first argument, or here.
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let path = &format!("{dir}/fsync-model.bin");
    for round in 1..=3 {
        println!("round {round} serial:       {}", pct(serial(path)));
        println!("round {round} concurrent 2: {}", pct(concurrent(path, 2)));
        println!("round {round} concurrent 4: {}", pct(concurrent(path, 4)));
    }
    std::fs::remove_file(path).ok();
}
