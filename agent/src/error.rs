//! The agent's error type: what stops a download, with a note on what to do.
//! Misbehaving peers are not errors here: the swarm core drops and bans them.

use std::fmt;

/// A failure that stops the agent's current job.
#[derive(Debug)]
pub struct Error {
    /// What went wrong.
    pub message: String,
    /// What to do about it (may be empty).
    pub note: String,
    /// Exit code for the CLI.
    pub code: u8,
}

/// Exit codes of `shoal-agent`.
pub mod exit {
    /// The release could not be verified (bad signature, rollback, bad index…).
    pub const UNTRUSTED: u8 = 1;
    /// Bad flags or arguments.
    pub const USAGE: u8 = 2;
    /// The origin and the LAN could not provide the release.
    pub const UNAVAILABLE: u8 = 3;
    /// A local file or network operation failed.
    pub const IO: u8 = 4;
}

impl Error {
    /// An error with a code and a note.
    pub fn new(code: u8, message: impl Into<String>, note: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            note: note.into(),
            code,
        }
    }

    /// A local IO failure.
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        let note = match e.kind() {
            std::io::ErrorKind::StorageFull => "free disk space; verified pieces are kept",
            std::io::ErrorKind::PermissionDenied => "check the directory's permissions",
            _ => "",
        };
        Error::new(exit::IO, format!("{what}: {e}"), note)
    }
}

/// `e` and every error under it (its `source()` chain), joined with ": ", so that a
/// refused TLS certificate reads "error sending request …: invalid peer certificate:
/// UnknownIssuer" rather than stopping at the outermost layer.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        let text = inner.to_string();
        // Some layers repeat their inner error in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = inner.source();
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if !self.note.is_empty() {
            write!(f, "\nnote: {}", self.note)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
