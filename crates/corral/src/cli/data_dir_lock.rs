//! One server per data directory: `corral serve` holds an exclusive advisory lock
//! (`flock`, through nix's safe `Flock`) on `<data-dir>/server.lock` for as long as it
//! runs. The file names the holder (pid, then its address once bound), so a second server can
//! say which one is in its way. The kernel drops the lock when the process exits, however it
//! exits (`kill -9` included), so a stale file never blocks a start.
//!
//! Offline commands (`corral keys create`) do not take the lock: the store itself is safe to
//! share (SQLite in WAL mode). This module does not decide what a server does with the data
//! directory once it holds it.

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "server.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: Flock<File>,
    path: PathBuf,
}

impl DataDirLock {
    /// Claims `data_dir` for this process, or says who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = data_dir.join(LOCK_FILE);
        // Never truncate before the lock is ours: the holder's pid is in there.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "another corral server ({}) is using the data directory {}; stop it first or give this one another --data-dir",
                    describe_holder(&holder),
                    data_dir.display()
                );
            }
            Err((_, error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()))
            }
        };
        let mut lock = DataDirLock { file, path };
        lock.write(&format!("pid {}\n", std::process::id()))?;
        Ok(lock)
    }

    /// Records the address the server listens on, for the next one to name.
    pub fn record_address(&mut self, address: SocketAddr) -> anyhow::Result<()> {
        self.write(&format!(
            "pid {}\naddress http://{address}\n",
            std::process::id()
        ))
    }

    fn write(&mut self, contents: &str) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(contents.as_bytes())?;
        self.file
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// "pid 123, http://127.0.0.1:8080" from the lock file's lines.
fn describe_holder(contents: &str) -> String {
    let field = |name: &str| {
        contents.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::trim)
                .filter(|value| !value.is_empty())
        })
    };
    match (field("pid"), field("address")) {
        (Some(pid), Some(address)) => format!("pid {pid}, listening on {address}"),
        (Some(pid), None) => format!("pid {pid}, still starting"),
        _ => "pid unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_described_from_the_file() {
        assert_eq!(
            describe_holder("pid 12\naddress http://127.0.0.1:1\n"),
            "pid 12, listening on http://127.0.0.1:1"
        );
        assert_eq!(describe_holder("pid 12\n"), "pid 12, still starting");
        assert_eq!(describe_holder(""), "pid unknown");
    }

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let mut first = DataDirLock::acquire(directory.path()).expect("first lock");
        first
            .record_address("127.0.0.1:9".parse().expect("address"))
            .expect("address recorded");
        let refused = DataDirLock::acquire(directory.path()).expect_err("second lock");
        let message = refused.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("http://127.0.0.1:9"), "{message}");
        drop(first);
        DataDirLock::acquire(directory.path()).expect("lock after release");
    }
}
