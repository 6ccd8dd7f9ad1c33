//! `strait`: the whole network of a Kubernetes node in one binary.

use std::process::ExitCode;

use clap::Parser;

mod agent;
mod cli;
mod dns;
mod error;
mod ingress;
mod lab;
mod lab_client;
mod lab_matrix;
mod overlay;
mod policy;
mod proxy;
mod render;
mod state;
mod trace;

use error::Error;

fn main() -> ExitCode {
    // A container runtime runs CNI plugins with CNI_COMMAND set and the
    // configuration on stdin; then strait is a plugin, not a command line.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return cni_plugin();
    }
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> Result<(), Error> {
    if let cli::Command::Lab(cli::LabCommand::Exec(args)) = &cli.command {
        // The command's own exit code is ours.
        std::process::exit(lab::exec(args)?);
    }
    match cli.command {
        cli::Command::Render(args) => render::run(&args),
        cli::Command::Proxy(args) => proxy::run(&args),
        cli::Command::Dns(args) => dns::run(&args),
        cli::Command::Ingress(args) => ingress::run(&args),
        cli::Command::Agent(args) => agent::run(&args),
        cli::Command::Trace(args) => trace::run(&args),
        cli::Command::Policy(cli::PolicyCommand::Matrix(args)) => policy::matrix(&args),
        cli::Command::Lab(command) => lab::run(command),
    }
}

/// `RUST_LOG` wins when set; otherwise `-v` raises the level (warn → info → debug → trace).
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn cni_plugin() -> ExitCode {
    use std::io::{Read, Write};
    // Logs go to stderr only when asked for: stdout carries the result.
    if std::env::var_os("RUST_LOG").is_some() {
        init_logging(0);
    }
    let vars = std::env::vars().collect();
    let env = strait_cni::Env::from_map(&vars);
    // VERSION may come with a configuration too; read whatever is there.
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = strait_cni::run(&env, &stdin);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    ExitCode::from(outcome.exit_code as u8)
}
