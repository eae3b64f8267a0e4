// SPDX-License-Identifier: GPL-2.0-only
//! Errors, mapped from errno values and extended acks to messages that say what to do.

use std::fmt;
use std::io;
use std::ops::Range;

use seng_core::genl::errno;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

const EPERM: i32 = 1;

/// Why an operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The generic netlink family `seng_family` does not exist: seng.ko is not loaded.
    ModuleNotLoaded,
    /// The kernel answered EPERM: the caller lacks CAP_NET_ADMIN.
    PermissionDenied,
    /// The kernel refused the request.
    Kernel(KernelError),
    /// Some messages of a batch were refused (the others were applied).
    Batch(BatchError),
    /// An operation of a replace transaction was refused: the transaction was aborted and the
    /// live table is unchanged.
    Replace(ReplaceError),
    /// A dump kept being interrupted by concurrent changes.
    DumpInterrupted {
        /// Attempts made.
        attempts: usize,
    },
    /// The socket failed.
    Io {
        /// What was being done.
        context: &'static str,
        /// The system error.
        source: io::Error,
    },
    /// The request cannot be encoded (it does not fit in one netlink message).
    Request(String),
    /// The kernel sent something this library does not understand.
    Protocol(String),
}

impl Error {
    /// The errno behind the error, when the kernel or the system reported one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::ModuleNotLoaded => Some(errno::ENOENT),
            Error::PermissionDenied => Some(EPERM),
            Error::Kernel(k) => Some(k.errno),
            Error::Batch(b) => b.failures.first().map(|f| f.error.errno),
            Error::Replace(r) => Some(r.error.errno),
            Error::DumpInterrupted { .. } => Some(libc::EINTR),
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Request(_) => Some(errno::EMSGSIZE),
            Error::Protocol(_) => Some(libc::EPROTO),
        }
    }

    /// True when the kernel said the address is not a registered enclave (or another entry the
    /// request names does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kernel(k) if k.errno == errno::ENOENT)
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

impl From<KernelError> for Error {
    /// EPERM becomes [`Error::PermissionDenied`]; everything else stays a [`KernelError`].
    fn from(e: KernelError) -> Error {
        match e.errno {
            EPERM => Error::PermissionDenied,
            _ => Error::Kernel(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ModuleNotLoaded => f.write_str(
                "the seng kernel module is not loaded (generic netlink family \"seng_family\" not found); load it with `modprobe seng`",
            ),
            Error::PermissionDenied => f.write_str(
                "permission denied: reading or changing the seng table needs CAP_NET_ADMIN (run as root)",
            ),
            Error::Kernel(k) => k.fmt(f),
            Error::Batch(b) => b.fmt(f),
            Error::Replace(r) => r.fmt(f),
            Error::DumpInterrupted { attempts } => {
                write!(f, "the table changed during each of {attempts} dump attempts; try again")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Request(what) => write!(f, "cannot encode the request: {what}"),
            Error::Protocol(what) => write!(f, "unexpected reply from the seng module: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A request the kernel refused: its errno and the extended ack message, if it sent one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelError {
    /// Positive errno.
    pub errno: i32,
    /// The kernel's extended ack message (`NLMSGERR_ATTR_MSG`).
    pub message: Option<String>,
    /// Where the attribute the kernel blamed starts, in bytes from the request's netlink header
    /// (`NLMSGERR_ATTR_OFFS`); for a batch, this names the refused enclave.
    pub offset: Option<u32>,
}

impl fmt::Display for KernelError {
    /// `WHAT: MESSAGE`, e.g. `not found: address is not a registered enclave`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.errno {
            errno::EINVAL => "invalid request",
            errno::ENOENT => "not found",
            errno::ENOSPC => "no room",
            errno::EBUSY => "busy",
            errno::EEXIST => "address taken",
            errno::ENOMEM => "out of memory in the kernel",
            errno::EMSGSIZE => "reply too large",
            errno::EOPNOTSUPP => "not supported by the loaded seng module (is it older than this tool?)",
            EPERM => "permission denied (needs CAP_NET_ADMIN)",
            _ => "",
        };
        match (what, &self.message) {
            ("", Some(m)) => write!(f, "{m} ({})", io::Error::from_raw_os_error(self.errno)),
            ("", None) => write!(f, "{}", io::Error::from_raw_os_error(self.errno)),
            (what, Some(m)) => write!(f, "{what}: {m}"),
            (what, None) => f.write_str(what),
        }
    }
}

impl std::error::Error for KernelError {}

/// One refused message of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFailure {
    /// The positions, in the input sequence, of the enclaves the message carried. The kernel
    /// registers a message's enclaves in order and stops at the first failure, so the ones before
    /// it may be registered.
    pub enclaves: Range<usize>,
    /// The position of the enclave the kernel refused, when it said which (those before it in
    /// the message are registered, those after it are not).
    pub refused: Option<usize>,
    /// The kernel's answer.
    pub error: KernelError,
}

/// The refused messages of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    /// Enclaves in the batch.
    pub total: usize,
    /// Refused messages, in order.
    pub failures: Vec<BatchFailure>,
}

impl BatchError {
    /// Enclaves carried by refused messages.
    pub fn refused(&self) -> usize {
        self.failures.iter().map(|f| f.enclaves.len()).sum()
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} message(s) carrying {} of {} enclaves refused", self.failures.len(), self.refused(), self.total)?;
        if let Some(first) = self.failures.first() {
            match first.refused {
                Some(at) => write!(f, "; enclave #{}: {}", at + 1, first.error)?,
                None => write!(f, "; enclaves #{}..#{}: {}", first.enclaves.start + 1, first.enclaves.end, first.error)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for BatchError {}

/// The refused operation of a replace transaction. Operations are numbered from 0 in the order
/// they were given to [`crate::Replace`], whatever their kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaceError {
    /// The refused operation, or the operations of the refused message when the kernel did not
    /// say which of them it refused.
    pub ops: Range<usize>,
    /// The kernel's answer.
    pub error: KernelError,
}

impl fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ops.len() {
            1 => write!(f, "operation #{}", self.ops.start + 1)?,
            _ => write!(f, "one of operations #{}..#{}", self.ops.start + 1, self.ops.end)?,
        }
        write!(f, " of the replacement refused: {}; the live table is unchanged", self.error)
    }
}

impl std::error::Error for ReplaceError {}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let k = |errno, message: Option<&str>| Error::from(KernelError { errno, message: message.map(str::to_owned), offset: None });
        let cases: Vec<(Error, &str)> = vec![
            (Error::ModuleNotLoaded, "load it with `modprobe seng`"),
            (k(1, None), "needs CAP_NET_ADMIN"),
            (k(2, Some("address is not a registered enclave")), "not found: address is not a registered enclave"),
            (k(22, Some("category must be 1-20 bytes of printable UTF-8, NUL-terminated")), "invalid request: category must be 1-20 bytes"),
            (k(28, Some("enclave table full")), "no room: enclave table full"),
            (k(16, Some("another socket has a replace transaction open")), "busy: another socket has a replace transaction open"),
            (k(17, Some("the address is a local enclave")), "address taken: the address is a local enclave"),
            (k(95, Some("unknown command")), "not supported by the loaded seng module"),
            (k(105, None), "No buffer space available"),
            (k(105, Some("odd")), "odd (No buffer space available"),
            (Error::DumpInterrupted { attempts: 8 }, "each of 8 dump attempts"),
        ];
        for (error, want) in cases {
            let text = error.to_string();
            assert!(text.contains(want), "{text:?} lacks {want:?}");
        }
        assert!(matches!(k(1, Some("x")), Error::PermissionDenied));
        assert!(k(2, None).is_not_found());
        assert!(!k(22, None).is_not_found());
        assert_eq!(k(28, None).errno(), Some(28));
    }

    #[test]
    fn batch_errors_name_the_refused_enclaves() {
        let e = BatchError {
            total: 1000,
            failures: vec![
                BatchFailure {
                    enclaves: 585..1000,
                    refused: None,
                    error: KernelError { errno: 28, message: Some("the enclaves would exceed the table's capacity".into()), offset: None },
                },
            ],
        };
        assert_eq!(e.refused(), 415);
        assert_eq!(
            e.to_string(),
            "1 message(s) carrying 415 of 1000 enclaves refused; enclaves #586..#1000: no room: the enclaves would exceed the table's capacity"
        );
        let one = BatchError {
            total: 1000,
            failures: vec![BatchFailure { enclaves: 250..500, refused: Some(260), error: KernelError { errno: 28, ..Default::default() } }],
        };
        assert!(one.to_string().ends_with("; enclave #261: no room"), "{one}");
        let staged = ReplaceError { ops: 7..8, error: KernelError { errno: 2, message: Some("address is not a registered enclave".into()), offset: Some(20) } };
        assert_eq!(staged.to_string(), "operation #8 of the replacement refused: not found: address is not a registered enclave; the live table is unchanged");
    }
}
