//! How much memory processes use, from `/proc/PID/smaps_rollup` (PSS and USS, which a cgroup's
//! `memory.current` cannot tell: it charges shared pages to whoever touched them first).
//!
//! Reads `/proc` only; knows nothing of sessions. Processes that end while they are being
//! measured are skipped.

use corral_core::MemoryUsage;

/// The memory of the processes `pids` together.
pub fn memory_of_processes(pids: impl IntoIterator<Item = u32>) -> MemoryUsage {
    pids.into_iter()
        .filter_map(memory_of_process)
        .fold(MemoryUsage::default(), MemoryUsage::plus)
}

/// One process's memory, `None` when it is gone or cannot be read.
pub fn memory_of_process(pid: u32) -> Option<MemoryUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_smaps_rollup(&text))
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
}

/// `pids` and the parents of theirs that are not among them: for a session's cgroup, its
/// init's launcher and a zygote-born worker's reaper, both outside the cgroup.
pub fn with_outside_parents(pids: Vec<u32>) -> Vec<u32> {
    let mut all = pids.clone();
    for pid in pids {
        if let Some(parent) = parent_of(pid).filter(|parent| *parent > 1) {
            if !all.contains(&parent) {
                all.push(parent);
            }
        }
    }
    all
}

/// `pid` and every process below it, from the parent links in `/proc/*/stat`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(parent) = parent_of(child) {
                parents.push((child, parent));
            }
        }
    }
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        let current = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, parent)| *parent == current)
                .map(|(child, _)| *child),
        );
        index += 1;
    }
    tree
}

fn parse_smaps_rollup(text: &str) -> MemoryUsage {
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    MemoryUsage {
        rss_bytes: field("Rss"),
        pss_bytes: field("Pss"),
        uss_bytes: field("Private_Clean") + field("Private_Dirty") + field("Private_Hugetlb"),
        processes: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_is_read() {
        let text =
            "55d0c0a00000-7ffd1f3fe000 ---p 00000000 00:00 0                          [rollup]\n\
                    Rss:               11300 kB\n\
                    Pss:                4242 kB\n\
                    Pss_Anon:           2000 kB\n\
                    Shared_Clean:       7000 kB\n\
                    Private_Clean:       100 kB\n\
                    Private_Dirty:      3000 kB\n\
                    Private_Hugetlb:       0 kB\n";
        let usage = parse_smaps_rollup(text);
        assert_eq!(usage.rss_bytes, 11300 * 1024);
        assert_eq!(usage.pss_bytes, 4242 * 1024);
        assert_eq!(usage.uss_bytes, 3100 * 1024);
        assert_eq!(usage.processes, 1);
    }

    #[test]
    fn this_process_is_measured() {
        let usage = memory_of_processes(process_tree(std::process::id()));
        assert!(usage.processes >= 1);
        assert!(usage.pss_bytes > 0 && usage.uss_bytes <= usage.rss_bytes);
    }
}
