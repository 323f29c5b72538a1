//! `shoal-agent service`: the agent as a Windows service.
//!
//! Windows starts a service's program and expects it to connect to the service control
//! manager at once, before anything else (otherwise: error 1053 and a rolled-back
//! install). So the dispatcher starts first, on the main thread, and the tokio runtime is
//! built inside the service's main function; Stop and Shutdown requests end the daemon
//! the way SIGTERM does on Linux. With no console to write to, the log goes to
//! `<state_dir>/logs/agent.log`, rotated by size ([`crate::logfile`]).
//!
//! On other systems the command explains where the service comes from instead (a
//! systemd unit runs `shoal-agent run`).

use std::path::PathBuf;

use crate::error::Result;

/// What the service runs: its registered name and its config file.
#[derive(Debug, Clone)]
pub struct ServiceArgs {
    /// The name the service is registered under (the vendor's package name).
    pub name: String,
    /// The config file.
    pub config: PathBuf,
}

/// Runs as the Windows service `args.name` until Windows stops it.
#[cfg(windows)]
pub fn run(args: ServiceArgs) -> Result<()> {
    windows::run(args)
}

/// Says that services are a Windows matter here.
#[cfg(not(windows))]
pub fn run(args: ServiceArgs) -> Result<()> {
    Err(crate::error::Error::new(
        crate::error::exit::USAGE,
        format!(
            "`service` runs the agent as a Windows service ({}); this is not Windows",
            args.name
        ),
        "on Linux a systemd unit runs `shoal-agent run --config FILE` (see the vendor's package)",
    ))
}

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio::sync::watch;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::ServiceArgs;
    use crate::error::{Error, Result, exit};

    /// The service main gets no arguments of ours: they wait here.
    static ARGS: OnceLock<ServiceArgs> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    pub fn run(args: ServiceArgs) -> Result<()> {
        let name = args.name.clone();
        let _ = ARGS.set(args);
        service_dispatcher::start(&name, ffi_service_main).map_err(|e| {
            Error::new(
                exit::USAGE,
                format!("cannot connect to the Windows service manager as {name}: {e}"),
                "`service` is started by Windows (the package installs it); run `shoal-agent \
                 run --config FILE` from a console instead",
            )
        })
    }

    fn status(state: ServiceState, accept: ServiceControlAccept, code: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let Some(args) = ARGS.get().cloned() else {
            return;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let handler = move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                stop_tx.send_replace(true);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(&args.name, handler) else {
            return;
        };
        let accept = ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN;
        let _ = handle.set_service_status(status(ServiceState::Running, accept, 0));
        let code = match run_daemon(&args, stop_rx) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e.message, note = %e.note, "the agent stopped");
                1
            }
        };
        let _ = handle.set_service_status(status(
            ServiceState::Stopped,
            ServiceControlAccept::empty(),
            code,
        ));
    }

    fn run_daemon(args: &ServiceArgs, stop: watch::Receiver<bool>) -> Result<()> {
        let cfg = crate::config::Config::load(Some(&args.config))?;
        let log = cfg.state_dir.join("logs").join("agent.log");
        match crate::logfile::RotatingFile::open(&log) {
            Ok(file) => shoal_cli::init_with_writer("info", file),
            Err(_) => shoal_cli::init_with_writer("info", std::io::sink),
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(exit::IO, format!("starting the runtime: {e}"), ""))?;
        tracing::info!(service = %args.name, config = %args.config.display(), "service started");
        rt.block_on(crate::daemon::run(cfg, stop))
    }
}
