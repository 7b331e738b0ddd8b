//! What restore on access costs a reader, measured against a peer in the same run (as root,
//! on a filesystem with fanotify pre-content events: btrfs or ext4, Linux 6.14+).
//! `scripts/bench-hsm-access.sh` runs both modes and writes `benches/hsm-access-latest.md`.
//!
//! ```text
//! hsm-access-bench ttfb  <store-spec> <root> [size-bytes] [runs]
//! hsm-access-bench opens <store-spec> <root> [files] [opens-per-mode] [blocks-per-mode]
//! ```
//!
//! - `ttfb`: a file of `size` bytes (1 GiB) is archived once; each run releases it, then a
//!   reader's first 4 KiB `read` is timed while the restore daemon (in this process, the
//!   engine's default part size and parts in flight) restores the whole file. Its peer, in
//!   the same run and alternating which goes first: a plain `get` of the same object with
//!   the same `object_store` client the engine uses, timed to its first byte and to its last;
//!   that GET written to a file on the namespace's filesystem and fsynced (the disk work a
//!   restore does too); and the whole object in ranged GETs of the engine's part size and
//!   parallelism, into memory. Every restore is checked byte for byte (outside the timing).
//!   Prints a Markdown table.
//! - `opens`: `files` small files (4 KiB, never archived) are opened and closed, and opened,
//!   read (4 KiB) and closed, in blocks that alternate between a restore daemon watching the
//!   filesystem and none; p50 and p99 of each over `opens-per-mode` operations per mode.
//!   Prints a Markdown table.
//!
//! The object store's cache (the page cache for `file://`, Azurite's own) is warm for both
//! sides alike: the object is read once before the first run.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hsm::restore_daemon::{DaemonConfig, RestoreDaemon};
use hsm::{ArchiveStore, EngineConfig, HsmEngine};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, default: u64| arg(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    hsm::engine::ignore_lease_break_signal();
    let res = match (arg(0), arg(1), arg(2)) {
        (Some("ttfb"), Some(spec), Some(root)) => {
            ttfb(spec, Path::new(root), num(3, 1 << 30), num(4, 3) as usize).await
        }
        (Some("opens"), Some(spec), Some(root)) => {
            opens(
                spec,
                Path::new(root),
                num(3, 1000) as usize,
                num(4, 100_000) as usize,
                num(5, 10) as usize,
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: hsm-access-bench ttfb <store-spec> <root> [size] [runs]\n       hsm-access-bench opens <store-spec> <root> [files] [opens-per-mode] [blocks-per-mode]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = res {
        eprintln!("hsm-access-bench: {e}");
        std::process::exit(1);
    }
}

async fn engine_for(spec: &str, root: &Path) -> Res<Arc<HsmEngine>> {
    let backend = backend::local::LocalBackend::open(root).await?;
    // The engine as the node plugin and `lustrekit hsm` run it: default part size and
    // parts in flight.
    let cfg = EngineConfig {
        root: backend.root().to_path_buf(),
        ..EngineConfig::default()
    };
    let store = ArchiveStore::open(spec, &cfg.retry)?;
    Ok(Arc::new(HsmEngine::new(store, Arc::new(backend), cfg)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Fills `path` with `size` pseudo-random bytes (incompressible enough for any store) and
/// returns their BLAKE3 hash.
fn write_data(path: &Path, size: u64) -> Res<blake3::Hash> {
    let mut f = std::fs::File::create(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        for w in chunk.chunks_exact_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            w.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(hasher.finalize())
}

fn hash_file(path: &Path) -> Res<blake3::Hash> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// Opens `path` and times its first 4 KiB `read` (on another thread: the daemon of this
/// process answers it).
async fn first_read(path: &Path) -> Res<Duration> {
    let path = path.to_path_buf();
    let t = tokio::task::spawn_blocking(move || -> Res<Duration> {
        let f = std::fs::File::open(&path)?;
        let mut buf = [0u8; 4096];
        let t0 = Instant::now();
        let n = f.read_at(&mut buf, 0)?;
        let took = t0.elapsed();
        if n == 0 {
            return Err("the first read returned nothing".into());
        }
        Ok(took)
    })
    .await??;
    Ok(t)
}

/// A plain GET of `key` through the engine's own client: time to its first byte and to its
/// last.
async fn plain_get(store: &ArchiveStore, key: &ObjPath, size: u64) -> Res<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut stream = store.object_store().get(key).await?.into_stream();
    let mut first = None;
    let mut got = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        if first.is_none() && !chunk.is_empty() {
            first = Some(t0.elapsed());
        }
        got += chunk.len() as u64;
    }
    let all = t0.elapsed();
    if got != size {
        return Err(format!("GET returned {got} bytes of {size}").into());
    }
    Ok((first.unwrap_or(all), all))
}

/// A plain GET of `key` written to `dest` (on the namespace's filesystem, in 8 MiB writes)
/// and fsynced: what a download to disk costs, which a restore pays too.
async fn get_to_file(store: &ArchiveStore, key: &ObjPath, size: u64, dest: &Path) -> Res<Duration> {
    let t0 = Instant::now();
    let mut stream = store.object_store().get(key).await?.into_stream();
    let file = Arc::new(std::fs::File::create(dest)?);
    let mut buf = Vec::with_capacity(8 << 20);
    let mut at = 0u64;
    loop {
        let chunk = stream.try_next().await?;
        let last = chunk.is_none();
        if let Some(c) = &chunk {
            buf.extend_from_slice(c);
        }
        if buf.len() >= 8 << 20 || (last && !buf.is_empty()) {
            let (f, data) = (
                file.clone(),
                std::mem::replace(&mut buf, Vec::with_capacity(8 << 20)),
            );
            let off = at;
            at += data.len() as u64;
            tokio::task::spawn_blocking(move || f.write_all_at(&data, off)).await??;
        }
        if last {
            break;
        }
    }
    let f = file.clone();
    tokio::task::spawn_blocking(move || f.sync_data()).await??;
    let took = t0.elapsed();
    drop(file);
    std::fs::remove_file(dest)?;
    if at != size {
        return Err(format!("GET returned {at} bytes of {size}").into());
    }
    Ok(took)
}

/// The whole object in ranged GETs of the engine's part size, as many in flight as the
/// engine has (into memory: the download alone, no hash, no write).
async fn ranged_get(engine: &HsmEngine, key: &ObjPath, size: u64) -> Res<Duration> {
    let part = engine.config().part_size as u64;
    let store = engine.store().object_store().clone();
    let t0 = Instant::now();
    let got: u64 = futures::stream::iter((0..size.div_ceil(part)).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            store
                .get_range(&key, i * part..((i + 1) * part).min(size))
                .await
                .map(|b| b.len() as u64)
        }
    }))
    .buffered(engine.config().concurrency)
    .try_fold(0u64, |a, n| async move { Ok(a + n) })
    .await?;
    if got != size {
        return Err(format!("ranged GETs returned {got} bytes of {size}").into());
    }
    Ok(t0.elapsed())
}

struct TtfbRun {
    restore_first_read: Duration,
    get_first_byte: Duration,
    get_all: Duration,
    get_to_disk: Duration,
    ranged_all: Duration,
}

async fn ttfb(spec: &str, root: &Path, size: u64, runs: usize) -> Res<()> {
    let engine = engine_for(spec, root).await?;
    let file = engine.config().root.join("big.bin");
    eprintln!("ttfb: writing {size} bytes to {}", file.display());
    let want = {
        let f = file.clone();
        tokio::task::spawn_blocking(move || write_data(&f, size)).await??
    };
    let t0 = Instant::now();
    let archived = engine.archive(&file).await?;
    eprintln!("ttfb: archived to {} in {:.1?}", archived.key, t0.elapsed());
    let key = ObjPath::parse(&archived.key)?;
    let daemon = RestoreDaemon::start(engine.clone(), DaemonConfig::default())?;
    let res = ttfb_runs(&engine, &file, &key, size, runs, want).await;
    let restored = daemon
        .stats()
        .restored
        .load(std::sync::atomic::Ordering::Relaxed);
    daemon.stop().await;
    // Leave no object behind (the file:// store's directory is the caller's to remove).
    let keys: Vec<_> = engine
        .store()
        .list(None)
        .map_ok(|m| m.location)
        .collect::<Vec<_>>()
        .await;
    for k in keys.into_iter().flatten() {
        let _ = engine.store().delete(&k).await;
    }
    let _ = tokio::fs::remove_file(&file).await;
    let runs = res?;
    if restored != runs.len() as u64 {
        return Err(format!("{restored} restores for {} runs", runs.len()).into());
    }
    print_ttfb(engine.store().name(), size, &runs);
    Ok(())
}

async fn ttfb_runs(
    engine: &Arc<HsmEngine>,
    file: &Path,
    key: &ObjPath,
    size: u64,
    runs: usize,
    want: blake3::Hash,
) -> Res<Vec<TtfbRun>> {
    // Warm the store's cache once, for both sides alike.
    plain_get(engine.store(), key, size).await?;
    let mut out = Vec::new();
    for i in 0..runs {
        engine.release(file).await?;
        let restore = || async {
            let t = first_read(file).await?;
            let got = {
                let f = file.to_path_buf();
                tokio::task::spawn_blocking(move || hash_file(&f)).await??
            };
            if got != want {
                return Err::<Duration, Box<dyn std::error::Error + Send + Sync>>(
                    "restored bytes differ".into(),
                );
            }
            Ok(t)
        };
        let peer = engine
            .config()
            .root
            .parent()
            .unwrap_or(&engine.config().root)
            .join("peer-download.bin");
        let peers = || async {
            let g = plain_get(engine.store(), key, size).await?;
            let d = get_to_file(engine.store(), key, size, &peer).await?;
            let rg = ranged_get(engine, key, size).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((g, d, rg))
        };
        let (restore_first_read, ((get_first_byte, get_all), get_to_disk, ranged_all)) =
            if i % 2 == 0 {
                let r = restore().await?;
                (r, peers().await?)
            } else {
                let p = peers().await?;
                (restore().await?, p)
            };
        eprintln!(
            "ttfb run {}: restore first read {:.0} ms, GET first byte {:.1} ms, GET all {:.0} ms, GET to disk {:.0} ms, ranged GETs {:.0} ms",
            i + 1,
            ms(restore_first_read),
            ms(get_first_byte),
            ms(get_all),
            ms(get_to_disk),
            ms(ranged_all)
        );
        out.push(TtfbRun {
            restore_first_read,
            get_first_byte,
            get_all,
            get_to_disk,
            ranged_all,
        });
    }
    Ok(out)
}

fn print_ttfb(store: &str, size: u64, runs: &[TtfbRun]) {
    let best = |f: fn(&TtfbRun) -> Duration| runs.iter().map(f).min().unwrap_or_default();
    let (r, g1, ga, gd, rg) = (
        best(|r| r.restore_first_read),
        best(|r| r.get_first_byte),
        best(|r| r.get_all),
        best(|r| r.get_to_disk),
        best(|r| r.ranged_all),
    );
    let mib = size as f64 / (1 << 20) as f64;
    println!("### Time to first byte, {mib:.0} MiB released file, store `{store}`\n");
    println!(
        "| run | read of the released file: first 4 KiB | plain GET: first byte | plain GET: whole object | plain GET to a file + fsync | ranged GETs: whole object (memory) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, x) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} ms | {:.1} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            i + 1,
            ms(x.restore_first_read),
            ms(x.get_first_byte),
            ms(x.get_all),
            ms(x.get_to_disk),
            ms(x.ranged_all)
        );
    }
    let rate = |d: Duration| mib / d.as_secs_f64();
    println!(
        "| best of {} | {:.0} ms ({:.0} MiB/s) | {:.1} ms | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} MiB/s) | {:.0} ms ({:.0} MiB/s) |\n",
        runs.len(),
        ms(r),
        rate(r),
        ms(g1),
        ms(ga),
        rate(ga),
        ms(gd),
        rate(gd),
        ms(rg),
        rate(rg)
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "Ratios (best of each): first byte through the daemon / GET's first byte = **{:.0}×**; / whole plain GET = **{:.2}×**; / plain GET to a file + fsync = **{:.2}×**; / whole object in ranged GETs = **{:.2}×**.\n",
        ratio(r, g1),
        ratio(r, ga),
        ratio(r, gd),
        ratio(r, rg)
    );
}

/// Per-operation latencies of one mode.
#[derive(Default)]
struct Lat {
    open_close: Vec<u32>,
    open_read_close: Vec<u32>,
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    f64::from(v[i]) / 1e3
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// One block: `passes` times over every file, open+close then open+read+close.
fn block(files: &[PathBuf], passes: usize, into: &mut Lat) -> Res<()> {
    let mut buf = [0u8; 4096];
    for _ in 0..passes {
        for f in files {
            let t0 = Instant::now();
            let h = std::fs::File::open(f)?;
            drop(h);
            into.open_close.push(nanos(t0.elapsed()));
        }
        for f in files {
            let t0 = Instant::now();
            let h = std::fs::File::open(f)?;
            let n = h.read_at(&mut buf, 0)?;
            drop(h);
            into.open_read_close.push(nanos(t0.elapsed()));
            if n != buf.len() {
                return Err(format!("short read of {}", f.display()).into());
            }
        }
    }
    Ok(())
}

async fn opens(spec: &str, root: &Path, nfiles: usize, per_mode: usize, blocks: usize) -> Res<()> {
    // The daemon needs an engine; nothing here reaches its store.
    let engine = engine_for(spec, root).await?;
    let dir = engine.config().root.join("small");
    let files = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || -> Res<Vec<PathBuf>> {
            std::fs::create_dir_all(&dir)?;
            (0..nfiles)
                .map(|i| {
                    let p = dir.join(format!("f{i:05}"));
                    std::fs::write(&p, [i as u8; 4096])?;
                    Ok(p)
                })
                .collect()
        })
        .await??
    };
    let blocks = blocks.max(1);
    let passes = per_mode.div_ceil(blocks * nfiles.max(1)).max(1);
    let (mut with, mut without) = (Lat::default(), Lat::default());
    let mut events = 0u64;
    // Blocks alternate (with, without, without, with, ...) so drift falls on both alike.
    for b in 0..2 * blocks {
        let watched = (b % 4 == 0) || (b % 4 == 3);
        let daemon = if watched {
            Some(RestoreDaemon::start(
                engine.clone(),
                DaemonConfig::default(),
            )?)
        } else {
            None
        };
        let into = if watched { &mut with } else { &mut without };
        let (f, mut lat) = (files.clone(), std::mem::take(into));
        // One untimed pass warms the caches (and the daemon's threads).
        let lat = tokio::task::spawn_blocking(move || -> Res<Lat> {
            block(&f, 1, &mut Lat::default())?;
            block(&f, passes, &mut lat)?;
            Ok(lat)
        })
        .await??;
        *into = lat;
        if let Some(d) = daemon {
            events += d.stats().events.load(std::sync::atomic::Ordering::Relaxed);
            d.stop().await;
        }
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let n = with.open_close.len();
    println!(
        "### open()+close() and open()+read(4 KiB)+close() of {nfiles} files of 4 KiB (not released), restore daemon watching vs none\n"
    );
    println!(
        "{n} operations of each kind per mode, in {blocks} blocks per mode alternating; the daemon answered {events} fanotify events in its blocks.\n"
    );
    println!("| operation | percentile | no daemon | daemon watching | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, a, b) in [
        ("open+close", &mut without.open_close, &mut with.open_close),
        (
            "open+read 4 KiB+close",
            &mut without.open_read_close,
            &mut with.open_read_close,
        ),
    ] {
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (x, y) = (pct(a, p), pct(b, p));
            println!(
                "| {name} | {label} | {x:.1} µs | {y:.1} µs | {:.2}× |",
                y / x
            );
        }
    }
    println!();
    Ok(())
}
