//! The publisher's error type and its mapping to exit codes.
//!
//! Every error says what went wrong and, where there is something to do, ends with a
//! `note:` that says what. Exit codes are fixed (see [`ExitCode`] and `--help`).

use std::fmt;
use std::path::{Path, PathBuf};

/// Process exit codes of `shoal-publisher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// `verify` found a missing, altered or forged file.
    VerifyFailed = 1,
    /// Bad flags or arguments.
    Usage = 2,
    /// Refused: the request conflicts with what is already published or stored.
    Refused = 3,
    /// A file, key, certificate or network operation failed.
    Io = 4,
}

/// A failed publisher command.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments that clap could not catch.
    Usage {
        /// What is wrong.
        message: String,
        /// What to do.
        note: String,
    },
    /// The command conflicts with existing state.
    Refused {
        /// What was refused.
        message: String,
        /// What to do.
        note: String,
    },
    /// Verification found problems; each names a file.
    Verify(Vec<crate::verify::Problem>),
    /// A file operation failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
        /// What we were doing.
        doing: &'static str,
    },
    /// Anything else from the environment (network, TLS, a bad key file).
    Other {
        /// What is wrong.
        message: String,
        /// What to do.
        note: String,
    },
}

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage { .. } => ExitCode::Usage,
            Error::Refused { .. } => ExitCode::Refused,
            Error::Verify(_) => ExitCode::VerifyFailed,
            Error::Io { .. } | Error::Other { .. } => ExitCode::Io,
        }
    }

    /// Wraps an IO error with the path and the action.
    pub fn io<'a>(
        doing: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            path: path.to_owned(),
            source,
            doing,
        }
    }

    /// An environment error with a note.
    pub fn other(message: impl Into<String>, note: impl Into<String>) -> Error {
        Error::Other {
            message: message.into(),
            note: note.into(),
        }
    }

    /// A refusal with a note.
    pub fn refused(message: impl Into<String>, note: impl Into<String>) -> Error {
        Error::Refused {
            message: message.into(),
            note: note.into(),
        }
    }

    /// A usage error with a note.
    pub fn usage(message: impl Into<String>, note: impl Into<String>) -> Error {
        Error::Usage {
            message: message.into(),
            note: note.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { message, note }
            | Error::Refused { message, note }
            | Error::Other { message, note } => {
                write!(f, "error: {message}")?;
                if !note.is_empty() {
                    write!(f, "\nnote: {note}")?;
                }
                Ok(())
            }
            Error::Verify(problems) => {
                write!(
                    f,
                    "error: verification failed ({} problem(s))",
                    problems.len()
                )?;
                for p in problems {
                    write!(f, "\n{p}")?;
                }
                Ok(())
            }
            Error::Io {
                path,
                source,
                doing,
            } => {
                write!(f, "error: {doing} {}: {source}", path.display())?;
                let note = match source.kind() {
                    std::io::ErrorKind::NotFound => "check the path",
                    std::io::ErrorKind::PermissionDenied => {
                        "check the file's permissions or run as the user that owns it"
                    }
                    std::io::ErrorKind::StorageFull => "free disk space and run the command again",
                    _ => "",
                };
                if !note.is_empty() {
                    write!(f, "\nnote: {note}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// The publisher's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
