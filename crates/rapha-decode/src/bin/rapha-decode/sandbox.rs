//! What the worker does to itself before it reads a byte of input, in this order: its memory
//! locked, present and future (`mlockall`, as the enclave runtime's: the decoded pixels must
//! not reach swap either, **I3**; refused, the worker decodes nothing); new user, network and
//! IPC namespaces where the kernel allows them (best effort: the seccomp filter below is what
//! holds), else, started by root, root given up for nobody; every descriptor but 0-2 closed; resource limits; no new privileges and not
//! dumpable; and a seccomp allowlist whose mismatch kills the process.
//!
//! The allowlist is what the decoders, glibc's allocator and the Rust runtime need to read a
//! frame from stdin, decode it in memory and write the samples out: `read` on fd 0, `write` on
//! fds 1 and 2, `brk`, `mmap`/`mprotect` without `PROT_EXEC`, `munmap`, `mremap`, `madvise`,
//! `futex` (uncontended locks), `rt_sigreturn`, `sigaltstack` (the Rust runtime drops its
//! signal stack on the way out), `exit` and `exit_group`. Nothing opens, creates
//! or connects anything; nothing executes new code or another program.

use std::collections::BTreeMap;

use nix::sched::CloneFlags;
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// The user and group a root-started worker becomes where it gets no user namespace.
const NOBODY: u32 = 65534;

/// Enters the sandbox: `memory` bytes of address space, `cpu` seconds of CPU time.
pub(crate) fn enter(memory: u64, cpu: u64) -> Result<(), String> {
    // Before the user namespace, which would drop CAP_IPC_LOCK in the node's namespace.
    mlockall(
        MlockAllFlags::MCL_CURRENT
            | MlockAllFlags::MCL_FUTURE
            | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT),
    )
    .map_err(|e| {
        format!("mlockall (the node needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK): {e}")
    })?;
    unlock_read_only_files();
    // Best effort: a container may refuse new namespaces; the limits and the filter do not
    // depend on them. In a new user namespace the worker holds no capability in the node's;
    // without one, a worker started by a root node gives up root (and with it every
    // capability) for nobody.
    if nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC,
    )
    .is_err()
    {
        let _ = nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC);
        if nix::unistd::geteuid().is_root() {
            let nobody = (Gid::from_raw(NOBODY), Uid::from_raw(NOBODY));
            nix::unistd::setgroups(&[])
                .and_then(|()| nix::unistd::setresgid(nobody.0, nobody.0, nobody.0))
                .and_then(|()| nix::unistd::setresuid(nobody.1, nobody.1, nobody.1))
                .map_err(|e| format!("giving up root: {e}"))?;
        }
    }
    close_other_fds();
    let limit = |r: Resource, soft: u64, hard: u64| {
        setrlimit(r, soft, hard).map_err(|e| format!("setrlimit {r:?}: {e}"))
    };
    limit(Resource::RLIMIT_CORE, 0, 0)?;
    limit(Resource::RLIMIT_FSIZE, 0, 0)?;
    limit(Resource::RLIMIT_NPROC, 0, 0)?;
    limit(Resource::RLIMIT_NOFILE, 3, 3)?;
    limit(Resource::RLIMIT_AS, memory, memory)?;
    // SIGXCPU at the soft limit, SIGKILL a second later.
    limit(Resource::RLIMIT_CPU, cpu, cpu + 1)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("dumpable: {e}"))?;
    let program: seccompiler::BpfProgram = filter()?
        .try_into()
        .map_err(|e| format!("seccomp filter: {e}"))?;
    seccompiler::apply_filter(&program).map_err(|e| format!("seccomp: {e}"))
}

/// Unlocks the mappings of files that are not writable (the program's and the libraries' code
/// and read-only data): the kernel never writes such pages to swap (it drops them and reads the
/// file again), and nothing the worker reads or decodes can be in them, so locking them keeps
/// nothing out of swap. It only spends the lock limit: a worker that gives up root keeps the
/// node's (often 8 MiB), of which the locked libraries (the C++ runtime, libc, libm, the
/// decoders) would leave about 1 MiB for the frame, the samples and the decoder's working
/// memory, less than OpenJPH needs for any frame. Everything written from here on (heap,
/// stack, every new mapping) stays locked. Best effort: what cannot be read or unlocked stays
/// locked.
fn unlock_read_only_files() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        // start-end perms offset dev inode [path]
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_), Some(_), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if perms.contains('w') || inode == "0" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if end <= start {
            continue;
        }
        // SAFETY: munlock changes no mapping and no byte of memory, only whether the range's
        // pages may be evicted; the range is one of this process's own file mappings, as the
        // kernel listed it.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::munlock(start as *const libc::c_void, end - start) };
    }
}

/// Closes every descriptor above 2 (whatever the parent's libraries left open without
/// close-on-exec).
fn close_other_fds() {
    // SAFETY: close_range takes no pointers; closing descriptors this process does not use
    // (nothing has opened any yet) cannot break an invariant of the program.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        // Kernels before 5.9: one by one, up to the descriptor limit.
        let max = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 16))
            .unwrap_or(1024);
        for fd in 3..max as i32 {
            let _ = nix::unistd::close(fd);
        }
    }
}

fn filter() -> Result<SeccompFilter, String> {
    fn err(e: impl std::fmt::Display) -> String {
        format!("seccomp rule: {e}")
    }
    let arg_is = |index: u8, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(err)
    };
    let no_exec = || {
        SeccompCondition::new(
            2,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(err)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_read, vec![arg_is(0, 0)?]);
    rules.insert(libc::SYS_write, vec![arg_is(0, 1)?, arg_is(0, 2)?]);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    for unconditional in [
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        rules.insert(unconditional, vec![]);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(err)
}
