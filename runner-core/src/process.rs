//! Ending the process as Ctrl-C's default action would: what a second Ctrl-C on a stuck loop
//! does, what a Ctrl-C with no run in progress does, and how `#[runner::main]` ends after an
//! interrupted run.

/// End the process as SIGINT's default action would: on Unix, killed by SIGINT (shells report
/// status 130); on Windows, exit code `STATUS_CONTROL_C_EXIT` (0xC000013A).
pub(crate) fn end_as_interrupted() -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    {
        raise_default_sigint();
        // Only reached if SIGINT is blocked on this thread: exit with the shell's status for it.
        std::process::exit(130)
    }
    #[cfg(windows)]
    {
        std::process::exit(0xC000_013A_u32 as i32)
    }
    #[cfg(not(any(unix, windows)))]
    {
        std::process::exit(130)
    }
}

/// Restore SIGINT's default action and raise it. No safe API can reset a signal disposition.
/// Async-signal-safe: the interim SIGINT handler calls it too. There SIGINT is blocked until the
/// handler returns, and is delivered (ending the process) then.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn raise_default_sigint() {
    // SAFETY: `signal` and `raise` take plain integers and touch no memory of ours, and both are
    // async-signal-safe. The only effect is restoring SIGINT's default disposition and
    // delivering SIGINT, which terminates the process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::raise(libc::SIGINT);
    }
}
