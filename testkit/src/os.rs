//! Operating-system plumbing for the servers a test owns: free ports, scratch directories,
//! signals, and child processes that die with the test.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// A port nothing listens on right now. Another process may take it before the server binds
/// it; the servers retry their first start with fresh ports for that reason.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free local port")
}

/// Two distinct free ports.
pub(crate) fn free_ports() -> (u16, u16) {
    // Both listeners are open at once, so the kernel cannot hand out the same port twice.
    let first = TcpListener::bind("127.0.0.1:0").expect("bind a free local port");
    let second = TcpListener::bind("127.0.0.1:0").expect("bind a free local port");
    let port = |listener: &TcpListener| listener.local_addr().expect("local address").port();
    (port(&first), port(&second))
}

/// Creates a fresh, empty directory `<tmp>/<prefix>-<uuid>`.
pub(crate) fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
    dir
}

/// Removes a scratch directory, warning (not failing) if something is left behind. With
/// `TESTKIT_KEEP_DIRS` set, keeps it (data and logs) for a post-mortem.
pub(crate) fn remove_dir(dir: &Path) {
    if std::env::var_os("TESTKIT_KEEP_DIRS").is_some() {
        eprintln!("testkit: kept {}", dir.display());
        return;
    }
    if let Err(err) = fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: could not remove {}: {err}", dir.display());
    }
}

/// Sends `signal` to `pid`; false if the process is gone.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Makes the child receive `signal` when the test process (precisely: the thread that spawns
/// it) dies, so a test binary killed by a timeout or Ctrl-C leaves no server running. Also
/// puts the child in a process group of its own, so the terminal's Ctrl-C reaches the test
/// only and the server is stopped through this signal, the way each server wants.
///
/// The setting survives `exec` (not of set-user-ID binaries), so it applies to the server
/// as long as the program spawned `exec`s into it rather than forking.
pub(crate) fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    // SAFETY: getpid is async-signal-safe.
    let parent = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nothing would ever signal us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
}

/// The user and group ids of an account, e.g. `postgres`.
pub(crate) fn account(name: &str) -> (u32, u32) {
    let c_name = std::ffi::CString::new(name).expect("an account name has no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to a static record, read at once; tests do
    // not call getpwnam concurrently with anything that relies on that record.
    let record = unsafe { libc::getpwnam(c_name.as_ptr()) };
    assert!(
        !record.is_null(),
        "the OS user {name:?} is needed (PostgreSQL refuses to run as root)"
    );
    // SAFETY: not null, checked above.
    unsafe { ((*record).pw_uid, (*record).pw_gid) }
}

/// Gives `path` to `uid:gid`.
pub(crate) fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|err| panic!("chown {}: {err}", path.display()));
}

/// The process's command name (`/proc/PID/comm`), e.g. `beam.smp`.
pub(crate) fn command_name(pid: u32) -> Option<String> {
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_owned())
}

/// The direct children of `pid`, from `/proc/*/stat`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| parent_of(*candidate) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_after_comm(format!("/proc/{pid}/stat"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `/proc` `stat` file ("PID (COMM) STATE PPID ...") from STATE on: COMM may contain
/// spaces and parentheses, so the rest starts after its last ')'.
fn stat_after_comm(path: impl AsRef<std::path::Path>) -> Option<String> {
    let stat = fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.to_owned())
}

/// Waits up to `limit` until every thread of `pid` is stopped (SIGSTOP): `kill` returns once
/// the signal is sent, and a thread that is running or in a system call stops a moment later.
pub(crate) fn wait_stopped(pid: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if all_threads_stopped(pid) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        stat_after_comm(thread.path().join("stat"))
            .map(|rest| matches!(rest.split_whitespace().next(), Some("T" | "t")))
            // A thread that has just exited is not running either.
            .unwrap_or(true)
    })
}

/// Waits up to `limit` for `child` to exit, without blocking the runtime's thread for long.
pub(crate) async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same, blocking: for `Drop`, which cannot await.
pub(crate) fn wait_exit_blocking(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `bytes` of a log file, for failure messages.
pub(crate) fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return format!("({} not found)", path.display());
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(bytes)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    format!(
        "--- {} (last {} bytes) ---\n{}",
        path.display(),
        text.len(),
        String::from_utf8_lossy(&text)
    )
}

/// A log file the server's stdout and stderr are appended to (kept across restarts).
pub(crate) fn append_log(path: &Path) -> (fs::File, fs::File) {
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|err| panic!("open {}: {err}", path.display()))
    };
    (open(), open())
}
