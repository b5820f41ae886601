//! How a trial process ended, in words: its exit code or signal, whether the
//! kernel's out-of-memory killer took it, its peak memory, and the tail of its
//! standard error. Linux-specific where the kernel says more than POSIX.

/// The kernel's count of out-of-memory kills, read before a trial process
/// starts and after it ends: the trial's memory cgroup (v1
/// `memory.oom_control`, v2 `memory.events`) and the whole machine
/// (`/proc/vmstat`). Either one rising while the process was killed by
/// SIGKILL means the out-of-memory killer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomCounts {
    cgroup: Option<u64>,
    machine: Option<u64>,
}

/// The `oom_kill N` line of a kernel counter file.
fn oom_kill_in(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// This process's memory cgroup counter file (children start in it).
fn cgroup_counter_file() -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let candidates: Vec<std::path::PathBuf> = if controllers.split(',').any(|c| c == "memory") {
            let base = std::path::Path::new("/sys/fs/cgroup/memory");
            vec![
                base.join(path).join("memory.oom_control"),
                base.join("memory.oom_control"),
            ]
        } else if controllers.is_empty() {
            let base = std::path::Path::new("/sys/fs/cgroup");
            vec![
                base.join(path).join("memory.events"),
                base.join("memory.events"),
            ]
        } else {
            continue;
        };
        if let Some(f) = candidates.into_iter().find(|f| f.is_file()) {
            return Some(f);
        }
    }
    None
}

impl OomCounts {
    pub fn read() -> OomCounts {
        OomCounts {
            cgroup: cgroup_counter_file()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|t| oom_kill_in(&t)),
            machine: std::fs::read_to_string("/proc/vmstat")
                .ok()
                .and_then(|t| oom_kill_in(&t)),
        }
    }

    /// Whether an out-of-memory kill happened between `self` and `later`:
    /// by the trial's cgroup when it can be read (the machine's count also
    /// rises for kills elsewhere), else by the machine's.
    pub fn rose_by(&self, later: &OomCounts) -> bool {
        let rose = |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(a), Some(b)) if b > a);
        match (self.cgroup, later.cgroup) {
            (Some(_), Some(_)) => rose(self.cgroup, later.cgroup),
            _ => rose(self.machine, later.machine),
        }
    }
}

/// The peak resident memory (bytes) of an exited, not yet reaped child and
/// its own children: Linux's `waitid` with `WNOWAIT` fills the resource usage
/// and leaves the child to be reaped by whoever waits for it. Blocks until
/// the child exits; `None` when it cannot be read.
pub fn peak_memory(pid: u32) -> Option<u64> {
    // SAFETY: zeroed siginfo/rusage are valid out-parameters; the raw waitid
    // system call takes (idtype, id, *siginfo, options, *rusage).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::P_PID,
            pid as libc::id_t,
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED | libc::WNOWAIT,
            &mut usage as *mut libc::rusage,
        )
    };
    (r == 0 && usage.ru_maxrss > 0).then(|| usage.ru_maxrss as u64 * 1024)
}

/// Whether a trial process that ended without a result died of a fault of the
/// machine: its last words (the last line of its standard error that is not a
/// `note:`) name one, e.g. a panic on `No space left on device (os error 28)`.
/// Never when it was killed (SIGKILL: out of memory, or stopped); an earlier
/// line mentioning a fault does not count.
pub fn died_of_machine_fault(
    status: &std::io::Result<std::process::ExitStatus>,
    stderr_tail: &str,
) -> bool {
    use std::os::unix::process::ExitStatusExt;
    if !matches!(status, Ok(s) if s.signal() != Some(libc::SIGKILL)) {
        return false;
    }
    stderr_tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .is_some_and(|l| crate::fault::of_message(l).is_some())
}

/// Bytes as MiB or GiB.
pub fn size_text(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// How a trial process ended, in one line: `exit code 1`, `killed by the
/// kernel's out-of-memory killer (peak memory 1.9 GiB)`, `out of memory: …`
/// (an allocation refused under a memory limit), `killed by signal 11`, then
/// the tail of its standard error.
pub fn describe(
    status: std::io::Result<std::process::ExitStatus>,
    oom_killed: bool,
    peak: Option<u64>,
    stderr_tail: &str,
) -> String {
    use std::os::unix::process::ExitStatusExt;
    let peak_text = peak
        .map(|b| format!("peak memory {}", size_text(b)))
        .unwrap_or_else(|| "peak memory unknown".into());
    // Rust's allocator aborts with this line when memory is refused (an
    // address-space limit, overcommit off): out of memory, not a crash.
    let refused = stderr_tail
        .lines()
        .find(|l| l.contains("memory allocation of") && l.contains("failed"));
    let desc = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (_, Some(libc::SIGKILL)) if oom_killed => {
                format!("killed by the kernel's out-of-memory killer ({peak_text}): the trial needs more memory than this machine or its memory limit gives it")
            }
            (_, Some(_)) | (Some(_), _) if refused.is_some() => format!(
                "out of memory: {} ({peak_text})",
                refused.unwrap_or_default().trim()
            ),
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(libc::SIGKILL)) => {
                format!("killed by signal 9 (SIGKILL, not sent by Sweep; {peak_text})")
            }
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    if stderr_tail.trim().is_empty() {
        desc
    } else {
        format!("{desc}; stderr: {}", stderr_tail.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn counters_and_words() {
        assert_eq!(
            oom_kill_in("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            oom_kill_in("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(oom_kill_in("nr_free_pages 5\n"), None);
        let c = |cgroup, machine| OomCounts { cgroup, machine };
        let a = c(Some(1), Some(5));
        assert!(a.rose_by(&c(Some(2), Some(6))));
        assert!(!a.rose_by(&a));
        // another cgroup's kill raises only the machine's count
        assert!(!a.rose_by(&c(Some(1), Some(6))));
        assert!(c(None, Some(5)).rose_by(&c(None, Some(6))));
        let killed = std::process::ExitStatus::from_raw(libc::SIGKILL);
        let d = describe(Ok(killed), true, Some(3 << 30), "");
        assert!(
            d.starts_with("killed by the kernel's out-of-memory killer (peak memory 3.0 GiB)"),
            "{d}"
        );
        let d = describe(Ok(killed), false, None, "");
        assert!(
            d.contains("signal 9") && d.contains("peak memory unknown"),
            "{d}"
        );
        let aborted = std::process::ExitStatus::from_raw(libc::SIGABRT);
        let d = describe(
            Ok(aborted),
            false,
            Some(200 << 20),
            "memory allocation of 1600000000 bytes failed\n",
        );
        assert!(
            d.starts_with(
                "out of memory: memory allocation of 1600000000 bytes failed (peak memory 200 MiB)"
            ),
            "{d}"
        );
        let exited = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(describe(Ok(exited), false, None, " "), "exit code 1");
        let panicked = std::process::ExitStatus::from_raw(101 << 8);
        let full = "thread 'main' panicked at src/x.rs:1:2:\nwriting: No space left on device (os error 28)\nnote: run with `RUST_BACKTRACE=1`\n";
        assert!(died_of_machine_fault(&Ok(panicked), full));
        let earlier = "warning: (os error 13) once\nthread 'main' panicked at src/x.rs:1:2:\nindex out of bounds\n";
        assert!(!died_of_machine_fault(&Ok(panicked), earlier));
        assert!(!died_of_machine_fault(&Ok(killed), full));
    }

    #[test]
    fn peak_memory_of_a_child_that_is_left_to_reap() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let peak = peak_memory(child.id()).expect("rusage of the exited child");
        assert!(peak > 0);
        // still there to be reaped, with its status
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }
}
