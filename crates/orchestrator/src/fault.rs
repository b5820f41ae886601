//! Faults of the machine, told apart from failures of a trial. A full disk, a
//! disk quota, an I/O error, a read-only or unwritable folder, too many open
//! files, or a results database that cannot be written are not the trial's
//! doing: the scheduler stops the sweep, gives the attempt back and names the
//! fault and the path, so that the rerun after it is fixed completes every
//! trial. An error in a trial's own config or data, or a crash, is a failure
//! and keeps the attempt rule.

/// The operating-system errors that are faults of the machine: (errno, what).
const OS_FAULTS: &[(i32, &str)] = &[
    (libc::ENOSPC, "no space left on the device"),
    (libc::EDQUOT, "disk quota exceeded"),
    (libc::EROFS, "read-only file system"),
    (libc::EIO, "input/output error"),
    (libc::EACCES, "permission denied"),
    (
        libc::EFBIG,
        "file too large for the file system or the file-size limit",
    ),
    (libc::EMFILE, "too many open files"),
    (libc::ENFILE, "too many open files in the system"),
];

/// SQLite's primary result codes that are faults of the machine (full, I/O,
/// read-only, cannot open). sqlx reports extended codes (a write I/O error is
/// 778 = 10 | 3 << 8): the primary code is the low byte.
const SQLITE_FAULTS: &[(i64, &str)] = &[
    (13, "the database or its disk is full"),
    (10, "disk I/O error"),
    (8, "the database file is read-only"),
    (14, "the database file cannot be opened"),
];

/// The primary SQLite result code of a database error's code, when it is one
/// (PostgreSQL's codes are five characters, not numbers).
pub fn sqlite_primary(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|c| c & 0xff)
}

/// What kind of machine fault an I/O error is, if it is one.
pub fn of_io(e: &std::io::Error) -> Option<&'static str> {
    let code = e.raw_os_error()?;
    OS_FAULTS.iter().find(|(c, _)| *c == code).map(|(_, w)| *w)
}

/// What kind of machine fault a message describes, if any: the message of an
/// error that crossed a process boundary as text, where Rust's I/O errors end
/// in `(os error N)`.
pub fn of_message(message: &str) -> Option<&'static str> {
    let mut rest = message;
    while let Some(i) = rest.find("(os error ") {
        let tail = &rest[i + "(os error ".len()..];
        let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(code) = digits.parse::<i32>() {
            if let Some((_, w)) = OS_FAULTS.iter().find(|(c, _)| *c == code) {
                return Some(w);
            }
        }
        rest = tail;
    }
    None
}

/// What kind of machine fault a database error is, if it is one: SQLite's
/// full / I/O / read-only / cannot-open codes, a lost connection or an
/// unreachable server.
pub fn of_sql(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref()?;
            if let Some(primary) = sqlite_primary(code) {
                return SQLITE_FAULTS
                    .iter()
                    .find(|(c, _)| *c == primary)
                    .map(|(_, w)| *w);
            }
            // PostgreSQL: connection exceptions (08…), the server shutting down
            // or starting (57P01–57P03), disk full (53100), I/O error (58030).
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
                return Some("the database server is unavailable");
            }
            match code {
                "53100" => Some("the database server's disk is full"),
                "58030" => Some("the database server had an I/O error"),
                _ => None,
            }
        }
        sqlx::Error::Io(io) => of_io(io).or(Some("the connection to the database was lost")),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Some("the database is unavailable")
        }
        _ => None,
    }
}

/// Whether a database error passes by itself (a lost connection, a server
/// restarting or not answering): worth retrying within the lease.
pub fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_faults_are_told_from_trial_failures() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(of_io(&full), Some("no space left on the device"));
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(of_io(&missing), None);
        // As a worker's message: the io error's text, wrapped by other errors.
        let text = format!("results/demo/trials/0003/best.safetensors: {full}");
        assert!(text.contains("(os error 28)"), "{text}");
        assert_eq!(of_message(&text), Some("no space left on the device"));
        let ro = format!("tb: {}", std::io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(of_message(&ro), Some("read-only file system"));
        assert_eq!(
            of_message("config.toml:3: unknown key `lr` (os error x)"),
            None
        );
        assert_eq!(
            of_message("No such file or directory (os error 2); then (os error 5)"),
            Some("input/output error")
        );
        assert_eq!(of_message("tensor error: shape mismatch"), None);
        assert_eq!(
            of_sql(&sqlx::Error::PoolTimedOut),
            Some("the database is unavailable")
        );
        assert_eq!(of_sql(&sqlx::Error::RowNotFound), None);
        // extended codes: SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED, SQLITE_CORRUPT_INDEX
        assert_eq!(sqlite_primary("778"), Some(10));
        assert_eq!(sqlite_primary("1032"), Some(8));
        assert_eq!(sqlite_primary("779"), Some(11));
        assert_eq!(sqlite_primary("13"), Some(13));
        assert_eq!(sqlite_primary("57P01"), None);
    }
}
