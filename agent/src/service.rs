//! `shoal-agent service`: the agent as a Windows service.
//!
//! Windows starts a service's program and expects it to connect to the service control
//! manager at once, before anything else (otherwise: error 1053 and a rolled-back
//! install). So the dispatcher starts first, on the main thread, and the tokio runtime is
//! built inside the service's main function; Stop and Shutdown requests end the daemon
//! the way SIGTERM does on Linux (reporting StopPending while it ends). With no console
//! to write to, the log goes to `logs\agent.log` beside the config, opened before the
//! config is read, rotated by size ([`crate::logfile`]). It asks Windows to restart it
//! after a failure, but not after a config it refuses (that waits for an admin). The
//! vendor's MSI keeps the config, trust and state beside the program in
//! `%ProgramFiles%\<name>`, which only administrators and SYSTEM may write.
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
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use tokio::sync::watch;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceState,
        ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{
        self, ServiceControlHandlerResult, ServiceStatusHandle,
    };
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
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

    fn status(
        state: ServiceState,
        accept: ServiceControlAccept,
        exit_code: ServiceExitCode,
    ) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        }
    }

    /// The service's own log, beside its config: it exists before the config is read,
    /// so a config that does not load is logged too.
    fn log_path(config: &Path) -> PathBuf {
        config
            .parent()
            .unwrap_or(Path::new("."))
            .join("logs")
            .join("agent.log")
    }

    fn service_main(_arguments: Vec<OsString>) {
        let Some(args) = ARGS.get().cloned() else {
            return;
        };
        match crate::logfile::RotatingFile::open(&log_path(&args.config)) {
            Ok(file) => shoal_cli::init_with_writer("info", file),
            Err(_) => shoal_cli::init_with_writer("info", std::io::sink),
        }
        let handle_cell: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let cell = handle_cell.clone();
        let handler = move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                // Stopping may take a while (the transfer ends, writes land): say so.
                if let Some(h) = cell.get() {
                    let _ = h.set_service_status(status(
                        ServiceState::StopPending,
                        ServiceControlAccept::empty(),
                        ServiceExitCode::Win32(0),
                    ));
                }
                stop_tx.send_replace(true);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(&args.name, handler) else {
            return;
        };
        let _ = handle_cell.set(handle);
        restart_on_failure(&args.name);
        let accept = ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN;
        let _ = handle.set_service_status(status(
            ServiceState::Running,
            accept,
            ServiceExitCode::Win32(0),
        ));
        let code = match run_daemon(&args, stop_rx) {
            Ok(()) => ServiceExitCode::Win32(0),
            Err(e) => {
                tracing::error!(error = %e.message, note = %e.note, "the agent stopped");
                if e.code == exit::USAGE {
                    // A config it refuses waits for an admin (the log says why), not
                    // for a restart every minute.
                    ServiceExitCode::Win32(0)
                } else {
                    // Windows records the failure and, with the failure actions set
                    // below, restarts the service.
                    ServiceExitCode::ServiceSpecific(u32::from(e.code))
                }
            }
        };
        let _ = handle.set_service_status(status(
            ServiceState::Stopped,
            ServiceControlAccept::empty(),
            code,
        ));
    }

    /// Asks Windows to restart the service after a failure (5 s, then 30 s, then every
    /// 60 s), also when it stops with an error rather than crashing. The MSI cannot say
    /// this (wixl has no ServiceConfig), so the service says it of itself; best effort.
    fn restart_on_failure(name: &str) {
        let set = || -> windows_service::Result<()> {
            let manager =
                ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
            let service = manager.open_service(name, ServiceAccess::CHANGE_CONFIG)?;
            let restart = |secs| ServiceAction {
                action_type: ServiceActionType::Restart,
                delay: Duration::from_secs(secs),
            };
            service.update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(5), restart(30), restart(60)]),
            })?;
            service.set_failure_actions_on_non_crash_failures(true)
        };
        if let Err(e) = set() {
            tracing::warn!(error = %e, "could not set the service's restart-on-failure actions");
        }
    }

    fn run_daemon(args: &ServiceArgs, stop: watch::Receiver<bool>) -> Result<()> {
        let cfg = crate::config::Config::load(Some(&args.config))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(exit::IO, format!("starting the runtime: {e}"), ""))?;
        tracing::info!(service = %args.name, config = %args.config.display(), "service started");
        let r = rt.block_on(crate::daemon::run(cfg, stop));
        // Blocking work left behind by the daemon gets a while. (A delivery that is
        // running when Stop arrives, an install command included, finishes first.)
        rt.shutdown_timeout(Duration::from_secs(20));
        r
    }
}
