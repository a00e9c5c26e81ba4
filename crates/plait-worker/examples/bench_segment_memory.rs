//! Where a segment's memory and time go: proves chosen segments of a program one by one, step
//! by step, and prints for each step its seconds, peak resident memory, minor page faults and
//! user/system CPU, beside the segment's trace cells and OpenVM's own memory estimate.
//!
//! ```text
//! cargo run --release -p plait-worker --example bench_segment_memory -- \
//!     ELF --vm-config rv32im-sha2 --height 20 --input file:model.bin --input file:images.bin \
//!     --segments 0,5 [--chips 12] [--json out.json]
//! ```
//!
//! The peak of a step is the process's `VmHWM`, reset before the step (after jemalloc has
//! returned the pages it keeps from freed memory), so it counts what the step itself held at
//! its highest, on top of what earlier steps still hold. Run it with `_RJEM_MALLOC_CONF` set to
//! compare allocator settings.
//!
//! Inside the STARK prover, a sampler reads the resident memory every 10 ms and a tracing layer
//! notes which of OpenVM's spans the proving thread is in, so each span gets the highest
//! resident memory seen while it was the innermost one open: where the peak is.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::ThreadId,
    time::{Duration, Instant},
};

use plait_core::{InputItemSource, ProgramInput};
use plait_prover::{
    openvm::OpenVmBackend, ProgramImage, ProverBackend, ProvingParams, ProvingPhase, SegmentStart,
    VmConfig,
};
use plait_worker::{process_usage, reset_peak_rss, ProcessUsage};
use serde::Serialize;
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

const GIB: f64 = (1u64 << 30) as f64;

struct Args {
    elf: PathBuf,
    params: ProvingParams,
    input: ProgramInput,
    segments: Vec<u32>,
    chips: usize,
    json: Option<PathBuf>,
    cache_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut elf = None;
    let mut params = ProvingParams::default();
    let mut input = ProgramInput::default();
    let mut segments = vec![0];
    let mut chips = 10;
    let mut json = None;
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let mut cache_dir = std::env::var_os("PLAIT_CACHE_DIR")
        .map_or_else(|| PathBuf::from(home).join(".cache/plait"), PathBuf::from);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--vm-config" => params.vm_config = value()?.parse()?,
            "--height" => params.segment_height = value()?.parse().map_err(|e| format!("{e}"))?,
            "--input" => {
                let item = value()?;
                let bytes = match ProgramInput::parse_item(&item).map_err(|e| e.to_string())? {
                    InputItemSource::Bytes(bytes) => bytes,
                    InputItemSource::File(path) => {
                        std::fs::read(path).map_err(|e| format!("{path}: {e}"))?
                    }
                };
                input.items.push(bytes);
            }
            "--segments" => {
                segments = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--segments {s}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--chips" => chips = value()?.parse().map_err(|e| format!("{e}"))?,
            "--json" => json = Some(PathBuf::from(value()?)),
            "--cache-dir" => cache_dir = PathBuf::from(value()?),
            _ if elf.is_none() && !arg.starts_with('-') => elf = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    Ok(Args {
        elf: elf.ok_or("name the guest ELF")?,
        params,
        input,
        segments,
        chips,
        json,
        cache_dir,
    })
}

/// One step of one segment's proof, measured.
#[derive(Serialize)]
struct Step {
    phase: ProvingPhase,
    seconds: f64,
    /// Resident memory when the step began.
    rss_start_bytes: u64,
    /// The highest resident memory during the step.
    peak_rss_bytes: u64,
    minor_faults: u64,
    user_seconds: f64,
    system_seconds: f64,
}

#[derive(Serialize)]
struct SegmentReport {
    vm_config: VmConfig,
    segment_height: u32,
    segment: u32,
    instructions: u64,
    openvm_estimate_bytes: u64,
    main_cells: u64,
    interaction_cells: u64,
    logup_cells: u64,
    /// Resident memory before the segment's proof began (keys, program, execution).
    rss_before_bytes: u64,
    peak_rss_bytes: u64,
    seconds: f64,
    steps: Vec<Step>,
    /// Per span path inside the proof: seconds as the innermost open span, highest RSS then.
    spans: Vec<SpanPeak>,
    chips: Vec<plait_prover::openvm::ChipCells>,
}

#[derive(Serialize)]
struct SpanPeak {
    path: String,
    seconds: f64,
    peak_rss_bytes: u64,
}

/// Span entries and exits on one thread, timed from `origin`.
struct SpanClock {
    origin: Instant,
    thread: Mutex<Option<ThreadId>>,
    events: Mutex<Vec<(Duration, &'static str, bool)>>,
}

impl SpanClock {
    fn note<S: tracing::Subscriber + for<'a> LookupSpan<'a>>(
        &self,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
        entered: bool,
    ) {
        if *self.thread.lock().expect("lock") != Some(std::thread::current().id()) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            let at = self.origin.elapsed();
            self.events
                .lock()
                .expect("lock")
                .push((at, span.metadata().name(), entered));
        }
    }
}

/// Samples this process's resident memory every 10 ms until dropped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(origin: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let rss = std::fs::read_to_string("/proc/self/statm")
                        .ok()
                        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                        .map_or(0, |pages| pages * 4096);
                    samples.lock().expect("lock").push((origin.elapsed(), rss));
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join());
        std::mem::take(&mut *self.samples.lock().expect("lock"))
    }
}

/// Attributes each sample to the path of spans open on the proving thread at its time.
fn span_peaks(
    events: &[(Duration, &'static str, bool)],
    samples: &[(Duration, u64)],
) -> Vec<SpanPeak> {
    let mut stack: Vec<&str> = Vec::new();
    let mut next = 0;
    let mut order: Vec<String> = Vec::new();
    let mut peaks: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut last_at = samples.first().map_or(Duration::ZERO, |s| s.0);
    for &(at, rss) in samples {
        while next < events.len() && events[next].0 <= at {
            let (_, name, entered) = events[next];
            if entered {
                stack.push(name);
            } else if let Some(i) = stack.iter().rposition(|&n| n == name) {
                stack.remove(i);
            }
            next += 1;
        }
        let path = if stack.is_empty() {
            "(outside spans)".to_string()
        } else {
            stack.join(" / ")
        };
        if !peaks.contains_key(&path) {
            order.push(path.clone());
        }
        let entry = peaks.entry(path).or_insert((0.0, 0));
        entry.0 += (at - last_at).as_secs_f64();
        entry.1 = entry.1.max(rss);
        last_at = at;
    }
    order
        .into_iter()
        .map(|path| {
            let (seconds, peak) = peaks[&path];
            SpanPeak {
                path,
                seconds,
                peak_rss_bytes: peak,
            }
        })
        .collect()
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_segment_memory: {e}");
        std::process::exit(2)
    });
    let elf = std::fs::read(&args.elf).unwrap_or_else(|e| {
        eprintln!("bench_segment_memory: {}: {e}", args.elf.display());
        std::process::exit(2)
    });
    let program = ProgramImage::new(elf);
    let clock = Arc::new(SpanClock {
        origin: Instant::now(),
        thread: Mutex::new(None),
        events: Mutex::new(Vec::new()),
    });
    tracing_subscriber::registry()
        .with(ClockLayer(clock.clone()).with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .init();
    let backend = OpenVmBackend::new(&args.cache_dir);
    backend.prepare_keys(&args.params).expect("keys");
    let started = Instant::now();
    let plan = backend
        .execute(&program, &args.input, &args.params)
        .expect("execution");
    println!(
        "{} segments at height {} under {}, {} instructions, executed in {:.1} s",
        plan.segments.len(),
        args.params.segment_height,
        args.params.vm_config,
        plan.segments.iter().map(|s| s.num_insns).sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
    let mut reports = Vec::new();
    for &index in &args.segments {
        let Some(segment) = plan.segments.get(index as usize) else {
            eprintln!("bench_segment_memory: there is no segment {index}");
            std::process::exit(2)
        };
        let is_last = index as usize + 1 == plan.segments.len();
        reset_peak_rss();
        let before = process_usage();
        // Each step's start: its phase, when, and the usage then (after the peak reset).
        let mut marks: Vec<(ProvingPhase, Instant, ProcessUsage)> = Vec::new();
        // The peak resident memory of each step, read as the next one begins.
        let mut peaks: Vec<u64> = Vec::new();
        let proof_started = Instant::now();
        clock.events.lock().expect("lock").clear();
        *clock.thread.lock().expect("lock") = Some(std::thread::current().id());
        let sampler = RssSampler::start(clock.origin);
        let (_, _, cells) = backend
            .prove_segment_observed(
                &program,
                &args.params,
                segment,
                is_last,
                SegmentStart::Reexecute(&args.input),
                &mut |phase| {
                    if !marks.is_empty() {
                        peaks.push(process_usage().peak_rss_bytes);
                    }
                    reset_peak_rss();
                    marks.push((phase, Instant::now(), process_usage()));
                },
            )
            .expect("proving");
        let seconds = proof_started.elapsed().as_secs_f64();
        let samples = sampler.finish();
        *clock.thread.lock().expect("lock") = None;
        let spans = span_peaks(&clock.events.lock().expect("lock"), &samples);
        let end = (Instant::now(), process_usage());
        peaks.push(end.1.peak_rss_bytes);
        let steps: Vec<Step> = marks
            .iter()
            .enumerate()
            .map(|(i, (phase, at, usage))| {
                let (next_at, next_usage) =
                    marks.get(i + 1).map_or(end, |(_, at, usage)| (*at, *usage));
                Step {
                    phase: *phase,
                    seconds: next_at.duration_since(*at).as_secs_f64(),
                    rss_start_bytes: usage.rss_bytes,
                    peak_rss_bytes: peaks[i],
                    minor_faults: next_usage.minor_faults - usage.minor_faults,
                    user_seconds: next_usage.user_seconds - usage.user_seconds,
                    system_seconds: next_usage.system_seconds - usage.system_seconds,
                }
            })
            .collect();
        let report = SegmentReport {
            vm_config: args.params.vm_config,
            segment_height: args.params.segment_height,
            segment: index,
            instructions: segment.num_insns,
            openvm_estimate_bytes: segment.memory_estimate_bytes,
            main_cells: cells.main_cells(),
            interaction_cells: cells.interaction_cells(),
            logup_cells: cells.logup_cells,
            rss_before_bytes: before.rss_bytes,
            peak_rss_bytes: steps.iter().map(|s| s.peak_rss_bytes).max().unwrap_or(0),
            seconds,
            steps,
            spans,
            chips: cells.chips,
        };
        print_report(&report, args.chips);
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports).expect("reports serialize");
        std::fs::write(path, text).expect("writing the JSON report");
    }
}

fn print_report(r: &SegmentReport, chips: usize) {
    println!(
        "\nsegment {} ({} instructions): {:.1} s, peak RSS {:.2} GiB (before it {:.2} GiB); \
         OpenVM estimates {:.2} GiB; main cells {:.1} M, interaction cells {:.1} M, \
         logup cells {:.1} M",
        r.segment,
        r.instructions,
        r.seconds,
        r.peak_rss_bytes as f64 / GIB,
        r.rss_before_bytes as f64 / GIB,
        r.openvm_estimate_bytes as f64 / GIB,
        r.main_cells as f64 / 1e6,
        r.interaction_cells as f64 / 1e6,
        r.logup_cells as f64 / 1e6,
    );
    println!(
        "  {:<17} {:>8} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "step", "seconds", "RSS start", "peak RSS", "minor faults", "user s", "sys s"
    );
    for s in &r.steps {
        println!(
            "  {:<17} {:>8.1} {:>9.2}G {:>9.2}G {:>12} {:>8.1} {:>8.1}",
            format!("{:?}", s.phase),
            s.seconds,
            s.rss_start_bytes as f64 / GIB,
            s.peak_rss_bytes as f64 / GIB,
            s.minor_faults,
            s.user_seconds,
            s.system_seconds
        );
    }
    println!(
        "  {:<70} {:>8} {:>9}",
        "inside the proof: span path", "seconds", "peak RSS"
    );
    for span in &r.spans {
        let path: String = span
            .path
            .chars()
            .rev()
            .take(70)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        println!(
            "  {:<70} {:>8.1} {:>8.2}G",
            path,
            span.seconds,
            span.peak_rss_bytes as f64 / GIB
        );
    }
    println!(
        "  {:<40} {:>10} {:>6} {:>6} {:>12}",
        "chip", "rows", "width", "inter", "main cells"
    );
    for c in r.chips.iter().take(chips) {
        println!(
            "  {:<40} {:>10} {:>6} {:>6} {:>12}",
            c.chip.chars().take(40).collect::<String>(),
            c.rows,
            c.width,
            c.interactions,
            c.main_cells()
        );
    }
}

/// The global subscriber's layer: a shared [`SpanClock`].
struct ClockLayer(Arc<SpanClock>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ClockLayer {
    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.note(id, ctx, true)
    }
    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.note(id, ctx, false)
    }
}
