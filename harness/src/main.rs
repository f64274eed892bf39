//! `harness`: the chaos toolkit's command line.
//!
//! Each subcommand is one variant of [`Command`] and one function; add a
//! subcommand by adding both.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::{catalog, runner};

/// Chaos toolkit for handoff: crash points, scenarios, invariants.
#[derive(Debug, Parser)]
#[command(name = "harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every declared crash point (name, side, description).
    Points {
        /// Print JSON (an array of {name, side, description}).
        #[arg(long)]
        json: bool,
    },
    /// List every scenario of the suite.
    Scenarios,
    /// Run one scenario and print its S/O/N timeline and the invariants.
    ///
    /// SCENARIO is a crash point name (runs `crash::<point>`) or a scenario
    /// name (`recover::<point>`, `happy-path`, ...; see `harness scenarios`).
    Repro {
        /// The crash point or scenario.
        scenario: String,
        /// Keep the scenario directory even when it passes.
        #[arg(long)]
        keep: bool,
    },
    /// Random kills at random phases under live traffic, reproducible by
    /// seed: the project's main job (default: 200 episodes or 60 s,
    /// whichever comes first).
    Chaos(harness::chaos::ChaosArgs),
    /// Handoff latency against the cost of starting a process, and client
    /// errors under load. Run it as a release build: `cargo run
    /// --release -p harness -- bench`.
    Bench(harness::bench::BenchArgs),
    /// Drive the supervisor's state machine, in-process, through every
    /// interleaving of deliveries, timeouts and faults up to a bound, then
    /// randomly; check the invariants after every step.
    Explore(ExploreArgs),
}

#[derive(Debug, clap::Args)]
struct ExploreArgs {
    /// Time budget in milliseconds: every run within the bound is explored
    /// whatever it says, then random runs until it is spent.
    #[arg(long, default_value_t = 30_000)]
    budget_ms: u64,
    /// Non-default choices (faults or reorderings) per run explored
    /// exhaustively.
    #[arg(long, default_value_t = 2)]
    bound: usize,
    /// Seed of the random walk beyond the bound.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay one run (as a failure prints it) and print its timeline.
    #[arg(long)]
    replay: Option<String>,
}

fn main() -> ExitCode {
    // A scenario may spawn this binary as a lying successor.
    harness::impostor::run_if_requested();
    // The bench runs its client load in this binary, in another process.
    harness::bench::load::clients::run_if_requested();
    let cli = Cli::parse();
    match cli.command {
        Command::Points { json } => points(json),
        Command::Scenarios => scenarios(),
        Command::Repro { scenario, keep } => repro(&scenario, keep),
        Command::Chaos(args) => chaos(&args),
        Command::Bench(args) => bench(args),
        Command::Explore(args) => explore(&args),
    }
}

fn bench(args: harness::bench::BenchArgs) -> ExitCode {
    match harness::bench::run(args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn points(json: bool) -> ExitCode {
    let registry = handoff::crash::REGISTRY;
    if json {
        match serde_json::to_string_pretty(registry) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("harness: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let width = registry.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in registry {
            println!("{:<width$}  {}", p.name, p.description);
        }
    }
    ExitCode::SUCCESS
}

fn scenarios() -> ExitCode {
    for s in catalog::all() {
        println!("{:<40}  {}", s.name, s.summary);
    }
    ExitCode::SUCCESS
}

fn repro(name: &str, keep: bool) -> ExitCode {
    let Some(scenario) = catalog::find(name) else {
        eprintln!(
            "harness: no scenario or crash point called {name:?}; `harness points` and \
             `harness scenarios` list them"
        );
        return ExitCode::from(2);
    };
    let mut report = runner::run(&scenario);
    println!("{}", scenario.summary);
    println!();
    println!(
        "{}",
        harness::timeline::render(&report.scenario.name, &report.observed)
    );
    println!("invariants:");
    print!("{}", harness::timeline::checks_text(&report));
    if let Some(e) = &report.error {
        println!("  error: {e}");
    }
    if keep && !report.dir_kept {
        println!("logs kept in {}", report.keep_dir().display());
    }
    if report.passed() {
        println!("\n{}: passed", scenario.name);
        ExitCode::SUCCESS
    } else {
        println!("\n{}", harness::timeline::failure_text(&report));
        ExitCode::FAILURE
    }
}

fn chaos(args: &harness::chaos::ChaosArgs) -> ExitCode {
    harness::chaos::run(args)
}

fn explore(args: &ExploreArgs) -> ExitCode {
    use harness::explore;
    if let Some(replay) = &args.replay {
        let choices = match explore::parse_replay(replay) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("harness explore: --replay: {e}");
                return ExitCode::from(2);
            }
        };
        let run = explore::describe(&choices, explore::ModelDefects::default());
        println!("{}", run.timeline);
        println!("{}", run.violation);
        return if run.violation.starts_with("none") {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let summary = explore::explore(&explore::Config {
        bound: args.bound,
        budget: std::time::Duration::from_millis(args.budget_ms),
        seed: args.seed,
        ..explore::Config::default()
    });
    print!("{}", summary.text());
    if summary.failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
