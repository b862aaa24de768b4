//! The process's descriptor table, grown once at start-up to what the descriptor limit allows, so
//! that a burst of connections never has to grow it.
//!
//! Why: Linux grows a process's descriptor table by doubling it (64, 128, 256, 512, 1,024, ...
//! slots), and in a process with more than one thread each growth waits for an RCU grace period
//! (`expand_fdtable` in `fs/file.c`), during which every one of our threads that opens a
//! descriptor waits too. On this project's 2-vCPU VM, the harness's first wave of 200 sessions
//! (about 600 descriptors) hit four growths: with the table grown at start-up its p99 went from
//! 105-134 ms to 75-91 ms (four alternating pairs; bench/README.md). The table never shrinks, so growing it early costs
//! nothing later; its size is 8 bytes per slot of kernel memory, capped at [`MAX_SLOTS`].
//! `ferry serve` grows it in `main`, before the runtime's threads exist, so that growth does
//! not wait either (with them running, it delayed the first greeting from ~6 to ~19 ms).

use std::io;

use rustix::fs::{open, Mode, OFlags};
use rustix::io::fcntl_dupfd_cloexec;
use rustix::process::{getrlimit, Resource};

/// The most slots grown at start-up (512 KiB of kernel memory); a larger limit still works, the
/// kernel grows the table past this on demand.
pub const MAX_SLOTS: u64 = 65_536;

/// Grows the descriptor table to the soft `RLIMIT_NOFILE` (at most [`MAX_SLOTS`]) and returns
/// the number of slots asked for. A table already that large is left alone.
pub fn grow_to_limit() -> io::Result<u64> {
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(MAX_SLOTS);
    let slots = limit.min(MAX_SLOTS);
    grow(slots)?;
    Ok(slots)
}

/// Makes the table hold at least `slots` descriptors: duplicating a descriptor onto the
/// lowest free number at or above `slots - 1` grows it, and closing both leaves it grown.
fn grow(slots: u64) -> io::Result<()> {
    let Some(highest) = slots.checked_sub(1) else {
        return Ok(());
    };
    let highest = i32::try_from(highest).map_err(io::Error::other)?;
    // Any descriptor will do; the root directory opened as a path (`O_PATH`) always exists.
    let root = open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let high = fcntl_dupfd_cloexec(&root, highest)?;
    drop(high);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's current size, from `/proc/self/status` (`FDSize`).
    fn table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn growing_to_the_limit_leaves_the_table_that_large() {
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(MAX_SLOTS);
        let slots = grow_to_limit().unwrap();
        assert_eq!(slots, limit.min(MAX_SLOTS));
        assert!(table_size() >= slots, "{} < {slots}", table_size());
    }

    #[test]
    fn growing_leaves_no_descriptor_open() {
        let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        grow(300).unwrap();
        assert!(table_size() >= 300);
        // Other tests run in parallel: compare with a margin, and look for ours specifically.
        let after = std::fs::read_dir("/proc/self/fd").unwrap().count();
        assert!(after <= before + 8, "{before} -> {after}");
        assert!(std::fs::read_link("/proc/self/fd/299").is_err());
    }

    #[test]
    fn growing_to_nothing_does_nothing() {
        grow(0).unwrap();
        grow(1).unwrap();
    }
}
