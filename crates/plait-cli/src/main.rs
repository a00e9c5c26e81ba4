//! `plait`: a proving pool for zkVM continuations. This binary is a thin shell over the
//! `plait-*` libraries: it parses arguments, sets up logging, and maps errors to exit codes
//! (see [`exit`]).

// The options' doc comments are clap's help text, written for a terminal, not for rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

mod commands;
mod config_file;
mod connection;
#[cfg(any(feature = "cuda", plait_cpu_fallback, test))]
mod cpu_fallback;
mod exit;
mod guest_build;
mod local;
mod program_arg;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "plait",
    version,
    about = "A proving pool for zkVM continuations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where keys, built guests and worker logs are kept.
    #[arg(long, global = true, env = "PLAIT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Log lines as `text`, or as `json`: one object per line, with `job`, `task`, `attempt`
    /// and `worker` fields where a line is about a task (for `serve` and `worker` under a log
    /// collector). Levels: `PLAIT_LOG` (e.g. `info`).
    #[arg(long, global = true, env = "PLAIT_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Execute a program and print its segment plan, without proving.
    Execute(commands::execute::ExecuteArgs),
    /// Prove a program with local worker processes and write the final proof.
    Prove(commands::prove::ProveArgs),
    /// Verify a proof file against the program it claims to prove.
    Verify(commands::verify::VerifyArgs),
    /// Generate (or load) the proving keys for a segment height and report them.
    Keygen(KeygenArgs),
    /// Build a guest program directory into a RISC-V ELF.
    BuildGuest(BuildGuestArgs),
    /// Run a worker that proves tasks for a coordinator.
    Worker(commands::worker::WorkerArgs),
    /// Run a coordinator that workers join and clients submit jobs to, over HTTP(S).
    Serve(commands::serve::ServeArgs),
    /// The operator's commands for a coordinator's workers: list, issue, revoke, ban, unban.
    Workers(commands::workers::WorkersArgs),
    /// The operator's commands for a coordinator's clients: list, issue, revoke.
    Clients(commands::clients::ClientsArgs),
    /// Upload a program to a coordinator and submit a job; with --wait, fetch its proof.
    Submit(commands::client::SubmitArgs),
    /// This client's programs on a coordinator: list, delete.
    Programs(commands::client::ProgramsArgs),
    /// Show a job's status and progress.
    Status(commands::client::JobArgs),
    /// List every job a coordinator holds.
    Jobs(commands::client::ListArgs),
    /// Show a job's event log.
    Events(commands::client::JobArgs),
    /// Download a finished job's proof.
    Fetch(commands::client::FetchArgs),
    /// Stop handing out a job's tasks (results in flight are still accepted).
    Pause(commands::client::JobArgs),
    /// Hand out a paused job's tasks again.
    Resume(commands::client::JobArgs),
    /// End a job; results in flight are ignored.
    Cancel(commands::client::JobArgs),
    /// Restart a failed job, keeping every proof it already accepted.
    Retry(commands::client::JobArgs),
    /// Measure this device's proving costs into a profile, for `plait plan` (resumable).
    Calibrate(commands::planner::CalibrateArgs),
    /// Execute a program at candidate segment heights and predict each one's latency and
    /// work on a pool; recommend one for a goal.
    Plan(commands::planner::PlanArgs),
    /// Compare predicted and measured latency and work of past `plait prove` jobs.
    Predictions(commands::planner::PredictionsArgs),
    /// Flagship demos: `plait demo zkml` proves a neural-network inference.
    Demo {
        #[command(subcommand)]
        demo: commands::demo::DemoCommand,
    },
    /// Prove again, on a chosen device, tasks whose proofs a job kept, and compare the bytes.
    #[command(hide = true)]
    Reprove(commands::reprove::ReproveArgs),
    /// Benchmark baseline: prove with OpenVM's single-process `Sdk::prove` (same keys).
    #[command(hide = true)]
    BenchSdkProve(commands::bench::BenchSdkProveArgs),
}

#[derive(Args)]
struct KeygenArgs {
    #[arg(long, default_value_t = 20)]
    segment_height: u32,
    /// The VM config whose keys to generate: rv32im or rv32im-sha2.
    #[arg(long, default_value = "rv32im")]
    vm_config: plait_prover::VmConfig,
}

#[derive(Args)]
struct BuildGuestArgs {
    /// The guest's package directory (with its Cargo.toml).
    dir: PathBuf,
}

fn cache_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("plait")
    })
}

/// `plait … | head`: a closed stdout ends the command quietly, as it ends `cat` (the shell
/// sees 141), instead of a panic in `println!`. Rust ignores SIGPIPE; this restores the
/// default. Not for `serve` and `worker`, which must outlive whatever reads their output;
/// sockets are unaffected either way (Rust writes to them with MSG_NOSIGNAL), so a client
/// that resets its connection cannot end a coordinator.
fn quiet_on_closed_pipe() {
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        quiet_on_closed_pipe();
    }
    // The long-running services log Plait's own events (leases, results, startup) by
    // default; the other commands only warnings.
    let default_filter = if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        "warn,plait=info,plait_coordinator=info,plait_worker=info"
    } else {
        "warn"
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields at the top level, beside the enclosing span's.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let cache = cache_dir(cli.cache_dir);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Execute(args) => commands::execute::run(args, &cache).await,
            Command::Prove(args) => commands::prove::run(args, &cache).await,
            Command::Verify(args) => commands::verify::run(args, &cache).await,
            Command::Keygen(args) => {
                commands::keygen(args.segment_height, args.vm_config, &cache).await
            }
            Command::BuildGuest(args) => {
                let elf = guest_build::build(&args.dir, &cache.join("guest-target"))?;
                println!("{}", elf.display());
                Ok(())
            }
            Command::Worker(args) => commands::worker::run(args, &cache).await,
            Command::Reprove(args) => commands::reprove::run(args, &cache).await,
            Command::Serve(args) => commands::serve::run(args, &cache).await,
            Command::Workers(args) => commands::workers::run(args).await,
            Command::Clients(args) => commands::clients::run(args).await,
            Command::Submit(args) => commands::client::submit(args, &cache).await,
            Command::Programs(args) => commands::client::programs(args).await,
            Command::Status(args) => commands::client::status(args).await,
            Command::Jobs(args) => commands::client::list(args).await,
            Command::Events(args) => commands::client::events(args).await,
            Command::Fetch(args) => commands::client::fetch(args).await,
            Command::Pause(args) => commands::client::act(args, "pause").await,
            Command::Resume(args) => commands::client::act(args, "resume").await,
            Command::Cancel(args) => commands::client::act(args, "cancel").await,
            Command::Retry(args) => commands::client::act(args, "retry").await,
            Command::Calibrate(args) => commands::planner::calibrate(args, &cache).await,
            Command::Plan(args) => commands::planner::plan(args, &cache).await,
            Command::Predictions(args) => commands::planner::predictions(args, &cache).await,
            Command::Demo { demo } => commands::demo::run(demo, &cache).await,
            Command::BenchSdkProve(args) => commands::bench::sdk_prove(args, &cache).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit::code_for(&error))
        }
    }
}
