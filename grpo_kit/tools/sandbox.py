"""Run model-written Python in a bubblewrap sandbox, never in our process: :func:`run_python`.

The code runs as ``python3 -I -`` (isolated mode, the program on stdin) of the Python installation
that runs grpo-kit (``sys.base_prefix``: its standard library and site-packages, read-only; not the
virtual environment), inside ``bwrap`` (bubblewrap, https://github.com/containers/bubblewrap):

- mounts: ``/usr`` (and the ``/bin``, ``/lib``, ``/lib64`` links to it) and the Python prefix,
  read-only; a fresh ``/proc`` and a minimal ``/dev``; a fresh tmpfs ``/sandbox`` of
  ``disk_mb`` MiB as the working directory and ``HOME``. Nothing else of the host exists there:
  not the project, not ``/tmp``, not ``/etc``, not ``/root``;
- namespaces: its own network (no interface but a downed loopback: no network), pid, ipc and uts;
  it dies with its parent (``--die-with-parent``) and has no controlling terminal (``--new-session``);
- an empty environment but ``PATH``, ``HOME`` and ``PYTHONHASHSEED``;
- as root (how this project runs on its machines) bwrap sets up the mounts and then
  ``setpriv`` drops to an unprivileged uid/gid of its own (a fresh one per call, from 61000 up),
  with no capabilities, no supplementary groups and ``no_new_privs``; as a normal user bwrap runs
  unprivileged in a user namespace, under that user's own uid.

Limits, each enforced by the kernel or by us, and reported in :class:`SandboxResult`:

==============  ========================================  =======================================
limit           how                                        reported as
==============  ========================================  =======================================
wall time       we kill the process group at timeout_s     ``timed_out``, ``limit="wall_time"``
CPU time        RLIMIT_CPU (SIGXCPU, then SIGKILL)         ``killed``, ``limit="cpu_time"``
memory          RLIMIT_AS of memory_mb per process         ``MemoryError`` -> ``limit="memory"``
processes       RLIMIT_NPROC (the call's own uid)          fork fails -> ``limit="processes"``
output          we stop reading and kill past max_output   ``killed``, ``limit="output"``
files           RLIMIT_FSIZE and the tmpfs size            a write fails -> ``limit="file_size"``
==============  ========================================  =======================================

``memory``, ``processes`` and ``file_size`` are read from the program's own traceback (``MemoryError``, a
``BlockingIOError`` from ``fork``): the program stays inside its limits either way; a program that
prints a fake traceback only changes its own report.

Without ``bwrap`` on ``PATH`` :func:`run_python` raises :class:`SandboxUnavailable`, unless the
caller passes ``unsafe_no_sandbox=True``: then the code runs as a plain child process with the same
rlimits and a temporary working directory, but with the host's files and network (unsafe: for a
trusted machine without bubblewrap only).
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

LIMITS = ("wall_time", "cpu_time", "memory", "processes", "output", "file_size")
_UIDS = itertools.count()


class SandboxUnavailable(RuntimeError):
    """``bwrap`` is not installed (or cannot start): model code is refused, not run unsandboxed."""


@dataclass(frozen=True)
class SandboxResult:
    stdout: str  # at most max_output_chars, then a "[... N more characters]" marker
    stderr: str
    exit_code: int | None  # None when killed by a signal (see ``signal``)
    timed_out: bool  # the wall-time limit
    killed: bool  # killed by a signal: by us (wall time, output) or by the kernel (CPU time)
    limit: str | None = None  # the limit that stopped it, one of LIMITS, or None
    signal: int | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Ran to the end with exit status 0."""
        return self.exit_code == 0 and not self.timed_out and not self.killed


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _python() -> str:
    """The base installation's interpreter (not a virtual environment's link to it)."""
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        p = os.path.join(sys.base_prefix, "bin", name)
        if os.path.exists(p):
            return os.path.realpath(p)
    return os.path.realpath(sys.executable)


def _bwrap_argv(bwrap: str, python: str, *, disk_mb: int, uid: int | None, status_fd: int) -> list[str]:
    prefix = os.path.realpath(sys.base_prefix)
    argv = [bwrap, "--die-with-parent", "--new-session", "--json-status-fd", str(status_fd),
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = os.path.realpath(f"/{link}")
        if os.path.islink(f"/{link}") and target.startswith("/usr/"):
            argv += ["--symlink", target.lstrip("/"), f"/{link}"]
        elif os.path.isdir(f"/{link}") and not os.path.islink(f"/{link}"):
            argv += ["--ro-bind", f"/{link}", f"/{link}"]
    if not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(disk_mb << 20), "--tmpfs", "/sandbox", "--chdir", "/sandbox",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/sandbox",
             "--setenv", "PYTHONHASHSEED", "0"]
    if uid is None:  # unprivileged: a user namespace, the caller's own uid outside it
        argv += ["--unshare-user", "--"]
    else:  # as root: mounts as root, then drop to a uid of this call's own
        argv += ["--", shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv + [python, "-I", "-"]


def _limits(cpu_s: int, memory_mb: int, processes: int, file_mb: int):
    def apply() -> None:  # in the child, before exec: inherited by bwrap, setpriv and python
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _read(stream, cap: int, sink: list, over: threading.Event, kill) -> None:
    """Read ``stream`` to its end, keeping at most ``cap`` bytes; past that, kill the program."""
    size = 0
    while chunk := stream.read1(65536):
        if size < cap:
            sink.append(chunk[:cap - size])
        size += len(chunk)
        if size > cap and not over.is_set():
            over.set()
            kill()
    stream.close()


def _clip(data: bytes, n: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= n else text[:n] + f"\n[... {len(text) - n} more characters]"


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512, cpu_s: int | None = None,
               processes: int = 16, max_output: int = 1 << 20, max_output_chars: int = 4000,
               disk_mb: int = 16, unsafe_no_sandbox: bool = False) -> SandboxResult:
    """Run ``code`` (Python source, untrusted) in the sandbox and return what it printed.

    Args:
        timeout_s: wall-clock limit (the process group is killed).
        memory_mb: address-space limit per process (RLIMIT_AS).
        cpu_s: CPU-time limit (RLIMIT_CPU); default ``ceil(timeout_s)``.
        processes: processes and threads of the call's uid at once (RLIMIT_NPROC).
        max_output: bytes read from stdout + stderr each; past that the program is killed.
        max_output_chars: characters of each stream returned (the rest is counted, not kept).
        disk_mb: size of the tmpfs working directory; also the largest file (RLIMIT_FSIZE).
        unsafe_no_sandbox: run without bubblewrap (the rlimits only). Unsafe.

    >>> r = run_python("print(sum(range(10)))")  # doctest: +SKIP
    >>> r.stdout, r.exit_code, r.timed_out  # doctest: +SKIP
    ('45\\n', 0, False)
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not timeout_s > 0 or memory_mb < 16 or processes < 1 or max_output < 1 or disk_mb < 1:
        raise ValueError("run_python: timeout_s > 0, memory_mb >= 16, processes, max_output, disk_mb >= 1")
    cpu = int(cpu_s if cpu_s is not None else max(1, -(-timeout_s // 1)))
    python = _python()
    workdir = None
    if unsafe_no_sandbox:
        workdir = tempfile.mkdtemp(prefix="grpo-kit-unsafe-")
        argv, cwd, env = [python, "-I", "-"], workdir, {"PATH": "/usr/bin:/bin", "HOME": workdir}
    else:
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable("the python tool needs bubblewrap (`bwrap`) to run model code "
                                     "(Debian: apt-get install bubblewrap); it never runs model code "
                                     "unsandboxed unless told unsafe_no_sandbox: true")
        uid = 61000 + (os.getpid() * 97 + next(_UIDS)) % 30000 if os.geteuid() == 0 else None
        status_r, status_w = os.pipe()  # bwrap writes {"child-pid": N} there once the sandbox is up
        argv, cwd, env = _bwrap_argv(bwrap, python, disk_mb=disk_mb, uid=uid, status_fd=status_w), "/", {}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, env=env, start_new_session=True, pass_fds=() if workdir else (status_w,),
                                preexec_fn=_limits(cpu, memory_mb, processes, disk_mb))
    except OSError as e:
        raise SandboxUnavailable(f"the sandbox could not start: {e}") from e
    finally:
        if not workdir:
            os.close(status_w)

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    out, err, over = [], [], threading.Event()
    readers = [threading.Thread(target=_read, args=(proc.stdout, max_output, out, over, kill), daemon=True),
               threading.Thread(target=_read, args=(proc.stderr, max_output, err, over, kill), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.stdin.write(code.encode("utf-8", errors="surrogatepass"))
    except (BrokenPipeError, OSError):
        pass  # it died before reading its program: reported below
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill()
        proc.wait(timeout=10)
    kill()  # anything it left behind in its group
    for r in readers:
        r.join(timeout=5)
    wall = time.monotonic() - t0
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    stdout, stderr = b"".join(out), b"".join(err)
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    if sig is None and rc is not None and rc > 128 and not unsafe_no_sandbox:
        sig = rc - 128  # bwrap reports its child's death by signal N as exit status 128 + N
    killed = sig is not None or over.is_set() or timed_out
    tail = stderr[-2000:].decode("utf-8", errors="replace")
    if timed_out:
        limit = "wall_time"
    elif over.is_set():
        limit = "output"
    elif sig in (signal.SIGXCPU, signal.SIGKILL) and sig is not None:
        limit = "cpu_time"
    elif "MemoryError" in tail:
        limit = "memory"
    elif "BlockingIOError" in tail and ("fork" in tail or "Resource temporarily unavailable" in tail):
        limit = "processes"
    elif "File too large" in tail or "No space left on device" in tail:
        limit = "file_size"
    else:
        limit = None
    if not workdir:
        with os.fdopen(status_r, "rb") as f:
            started = b"child-pid" in f.read()
        if not started and not timed_out:
            raise SandboxUnavailable(f"bwrap could not set up the sandbox: {_clip(stderr, 500).strip()}")
    return SandboxResult(stdout=_clip(stdout, max_output_chars), stderr=_clip(stderr, max_output_chars),
                         exit_code=None if killed and sig is not None else rc, timed_out=timed_out,
                         killed=killed, limit=limit, signal=sig, wall_s=wall)
