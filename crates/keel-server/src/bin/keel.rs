//! The `keel` binary: parses the command line, loads config, and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use keel_server::cli::{Cli, Command, ConfigCommand, ServeArgs};
use keel_server::config::{Config, ConfigSources, Overrides, load::load, render};
use keel_server::{App, Listeners, banner, logging};

// glibc's malloc spent about 14 % of the CPU serving cache hits under load (allocation-heavy
// request handling across worker threads); jemalloc's per-thread caches cut that down while
// keeping idle memory small.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for configuration errors (EX_CONFIG of sysexits.h).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", render::default_toml());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", render::markdown_reference());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { path }) => {
            match load_config(Some(&path), Overrides::default()) {
                Ok(config) => {
                    let shown = config.redacted_toml();
                    println!(
                        "# {} is valid. Effective configuration (secrets redacted):\n\n{shown}",
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}

fn load_config(file: Option<&std::path::Path>, overrides: Overrides) -> Result<Config, ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    load(&ConfigSources {
        file,
        env: &env,
        overrides,
    })
    .map_err(|e| {
        eprintln!("keel: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref(), args.overrides()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("keel: configuration error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // One worker: a single-threaded event loop (as Redis runs), which skips the multi-threaded
    // scheduler's cross-thread wake-ups and work stealing.
    let mut runtime = if config.server.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all();
    if config.server.worker_threads > 1 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let app = match App::builder(config).build() {
            Ok(app) => app,
            Err(e) => {
                eprintln!("keel: cannot start: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("keel: server.listen: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let gateway = match app.bind_gateway().await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("keel: {e}");
                return ExitCode::FAILURE;
            }
        };
        let gateway_addr = gateway.as_ref().and_then(|l| l.local_addr().ok());
        let signals = Signals::install();
        print!("{}", banner::render(&app, addr, gateway_addr));
        let listeners = Listeners {
            api: listener,
            gateway,
        };
        match app.run_on(listeners, shutdown_signal(signals)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keel: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGINT and SIGTERM, listened for from the moment they are installed: a signal that arrives
/// before keel waits for it is kept, not fatal (the default action would kill the process).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers; call inside the runtime, before announcing readiness.
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(self.term.as_mut()) => {}
                () = recv(self.int.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal(mut signals: Signals) {
    signals.next().await;
    tokio::spawn(async move {
        signals.next().await;
        eprintln!("keel: second signal, exiting now");
        std::process::exit(130);
    });
}
