//! How a `cuda` build of plait starts on a machine without an NVIDIA GPU: it runs the CPU build
//! it carries.
//!
//! OpenVM's CUDA memory manager claims the GPU in a constructor that runs before `main` and
//! aborts the process when there is none, so a `cuda` build cannot prove on the CPU in its own
//! process there. `scripts/build-gpu.sh` therefore builds the default (CPU) binary first and
//! embeds it (`PLAIT_CPU_FALLBACK=FILE` at build time). A check that runs before every
//! constructor (`.preinit_array`) looks for the NVIDIA driver's device file and, without it,
//! runs that CPU build from memory in place of this process, with the same arguments and
//! environment plus [`NO_GPU`]: the CPU build reads it to say why it proves on the CPU, and
//! refuses `--device gpu` with that reason.

// Without `cuda` (or a CPU build to carry) only the tests use this module.
#![cfg_attr(not(any(feature = "cuda", plait_cpu_fallback)), allow(dead_code))]

use std::ffi::{c_char, c_int, CStr};

/// Added to the CPU build's environment: why it runs (see `plait_prover::openvm::NO_GPU_ENV`).
pub const NO_GPU: &CStr = c"PLAIT_NO_GPU=this machine has no NVIDIA driver (/dev/nvidiactl is missing), so this GPU build of plait runs the CPU build it carries";

/// The CPU build `scripts/build-gpu.sh` embeds, if it did.
#[cfg(plait_cpu_fallback)]
static CPU_BUILD: Option<&[u8]> = Some(include_bytes!(env!("PLAIT_CPU_FALLBACK_PATH")));
#[cfg(not(plait_cpu_fallback))]
static CPU_BUILD: Option<&[u8]> = None;

#[cfg(any(feature = "cuda", plait_cpu_fallback))]
#[used]
#[link_section = ".preinit_array"]
static NO_GPU_GUARD: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    no_gpu_guard;

/// Runs before every constructor of the process, so before OpenVM's memory manager claims the
/// device. Only system calls here: nothing of Rust's runtime is set up yet.
extern "C" fn no_gpu_guard(_: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    if unsafe { libc::access(c"/dev/nvidiactl".as_ptr(), libc::F_OK) } == 0 {
        return;
    }
    let Some(image) = CPU_BUILD else {
        say(
            b"plait: this GPU build (cuda) needs an NVIDIA GPU and driver, and /dev/nvidiactl is \
missing. It carries no CPU build to run instead (scripts/build-gpu.sh embeds one): use the \
default build of plait on this machine.\n",
        );
        unsafe { libc::_exit(3) };
    };
    if unsafe { has_variable(envp, NO_GPU) } {
        say(
            b"plait: no NVIDIA GPU here (/dev/nvidiactl is missing), and PLAIT_NO_GPU is already \
set: this process was started by a GPU build's CPU fallback, whose carried build is a GPU build \
too, so it is not started again (unset PLAIT_NO_GPU, or rebuild with scripts/build-gpu.sh).\n",
        );
        unsafe { libc::_exit(3) };
    }
    let errno = unsafe { exec_from_memory(image, argv, envp, NO_GPU) };
    say(
        b"plait: no NVIDIA GPU here (/dev/nvidiactl is missing), and the CPU build this GPU \
build carries could not be started: ",
    );
    say(unsafe { CStr::from_ptr(libc::strerror(errno)) }.to_bytes());
    say(b"\n");
    unsafe { libc::_exit(3) };
}

/// Whether `envp` already sets the variable `assignment` ("NAME=value") sets: then this process
/// is what a GPU build started, and starting what it carries would loop.
unsafe fn has_variable(envp: *const *const c_char, assignment: &CStr) -> bool {
    let assignment = assignment.to_bytes();
    let Some(equals) = assignment.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = &assignment[..=equals];
    let mut i = 0;
    while !envp.is_null() && !(*envp.add(i)).is_null() {
        if CStr::from_ptr(*envp.add(i)).to_bytes().starts_with(name) {
            return true;
        }
        i += 1;
    }
    false
}

fn say(message: &[u8]) {
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

/// The last system call's error number (std reads it without allocating).
fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// At most this many environment variables are passed on with [`NO_GPU`] added; more than that
/// are passed on as they are, without it.
const MAX_ENVIRONMENT: usize = 4096;

/// The environment [`exec_from_memory`] builds (no allocator before `main`).
static mut ENVIRONMENT: [*const c_char; MAX_ENVIRONMENT + 2] =
    [std::ptr::null(); MAX_ENVIRONMENT + 2];

/// Replaces this process with the program `image` (an ELF file's bytes), started with `argv`
/// and `envp` and `extra` ("NAME=value") added to its environment. Returns only if that fails,
/// with the error number.
///
/// # Safety
/// Made for the moments before `main` and between `fork` and `exec`: system calls only, no
/// allocation, one thread. `argv` and `envp` are null-terminated arrays of C strings (`envp`
/// may be null).
pub unsafe fn exec_from_memory(
    image: &[u8],
    argv: *const *const c_char,
    envp: *const *const c_char,
    extra: &'static CStr,
) -> c_int {
    let fd = libc::memfd_create(c"plait-cpu".as_ptr(), libc::MFD_CLOEXEC);
    if fd < 0 {
        return errno();
    }
    let mut written = 0;
    while written < image.len() {
        let rest = &image[written..];
        let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            libc::close(fd);
            return e;
        }
        written += n as usize;
    }
    let environment = std::ptr::addr_of_mut!(ENVIRONMENT) as *mut *const c_char;
    let mut count = 0;
    while !envp.is_null() && count <= MAX_ENVIRONMENT && !(*envp.add(count)).is_null() {
        count += 1;
    }
    let envp = if count > MAX_ENVIRONMENT {
        envp
    } else {
        for i in 0..count {
            *environment.add(i) = *envp.add(i);
        }
        *environment.add(count) = extra.as_ptr();
        *environment.add(count + 1) = std::ptr::null();
        environment as *const *const c_char
    };
    libc::fexecve(fd, argv, envp);
    let e = errno();
    libc::close(fd);
    e
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    /// The real path of the fallback, between fork and exec: a copy of `env` run from memory
    /// prints the environment it was given, with the variable added last.
    #[test]
    fn a_program_runs_from_memory_with_the_variable_added() {
        let image = std::fs::read("/usr/bin/env").expect("coreutils' env");
        let mut command = std::process::Command::new("/bin/false");
        unsafe {
            command.pre_exec(move || {
                let argv = [c"env".as_ptr(), std::ptr::null()];
                let envp = [
                    c"KEPT=yes".as_ptr(),
                    c"ALSO=kept".as_ptr(),
                    std::ptr::null(),
                ];
                let e = exec_from_memory(&image, argv.as_ptr(), envp.as_ptr(), c"ADDED=1");
                Err(std::io::Error::from_raw_os_error(e))
            });
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "KEPT=yes\nALSO=kept\nADDED=1\n"
        );
    }

    #[test]
    fn a_variable_is_found_by_its_name_alone() {
        let envp = [
            c"HOME=/root".as_ptr(),
            c"PLAIT_NO_GPU=earlier".as_ptr(),
            std::ptr::null(),
        ];
        unsafe {
            assert!(has_variable(envp.as_ptr(), NO_GPU));
            assert!(!has_variable(envp.as_ptr(), c"PLAIT_NO_GPU_X=1"));
            assert!(!has_variable(std::ptr::null(), NO_GPU));
        }
    }

    /// What fails is named: an image that is not a program.
    #[test]
    fn an_image_that_is_no_program_is_refused_with_its_error() {
        let mut command = std::process::Command::new("/bin/true");
        unsafe {
            command.pre_exec(|| {
                let argv = [c"nothing".as_ptr(), std::ptr::null()];
                let e = exec_from_memory(b"not an ELF", argv.as_ptr(), std::ptr::null(), c"A=1");
                Err(std::io::Error::from_raw_os_error(e))
            });
        }
        let err = command.output().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC), "{err}");
    }
}
