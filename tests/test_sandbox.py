"""The python tool's sandbox (grpo_kit.tools.run_python, bubblewrap): each escape or exhaustion
attempt is stopped within its limit and reported; a normal computation returns its stdout."""

from __future__ import annotations

import os
import time

import pytest

from grpo_kit.tools import SandboxUnavailable, run_python
from grpo_kit.tools.sandbox import bwrap_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(bwrap_path() is None and not os.environ.get("CI"),
                                reason="bubblewrap not installed (.ci/run installs it)")


def _sandbox_uid_processes() -> list[int]:
    """Pids of processes owned by the sandbox's uids (61000-90999) anywhere on the host."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                uid = os.stat(f"/proc/{d}").st_uid
            except FileNotFoundError:
                continue
            if 61000 <= uid < 91000:
                pids.append(int(d))
    return pids


def test_a_normal_computation_returns_its_stdout():
    r = run_python("import math\nprint(math.comb(10, 3), sum(range(10)))\nprint('err', file=__import__('sys').stderr)")
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out, r.killed, r.limit) == ("120 45\n", "err\n", 0, False, False, None)
    assert r.ok
    r = run_python("raise SystemExit(3)")
    assert r.exit_code == 3 and not r.ok and not r.killed


def test_no_network():
    r = run_python("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('CONNECTED')\n"
                   "except OSError as e:\n    print('blocked', e.errno)")
    assert r.stdout.startswith("blocked") and "CONNECTED" not in r.stdout


def test_the_project_and_host_files_are_not_there():
    readme = os.path.join(ROOT, "README.md")
    assert os.path.exists(readme)
    r = run_python(f"import os\nprint([os.path.exists(p) for p in ({readme!r}, '/etc/passwd', '/root/.bashrc', '/tmp', "
                   f"{ROOT!r})])\nopen({readme!r})")
    assert r.stdout == "[False, False, False, False, False]\n"
    assert "FileNotFoundError" in r.stderr and r.exit_code == 1


def test_no_write_outside_its_temporary_directory(tmp_path):
    target = tmp_path / "escape"
    r = run_python(f"open('here.txt', 'w').write('ok')\nprint(open('here.txt').read())\n"
                   f"for p in ('/usr/evil', '/sandbox/../evil', {str(target)!r}):\n"
                   "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
                   "    except OSError as e:\n        print('refused', e.errno)")
    assert r.stdout.splitlines()[0] == "ok" and "WROTE" not in r.stdout and r.stdout.count("refused") == 3
    assert not target.exists() and not os.path.exists("/usr/evil")
    r = run_python("open('big', 'wb').write(b'x' * (64 << 20))", disk_mb=4)  # past the tmpfs and RLIMIT_FSIZE
    assert r.limit == "file_size" and r.exit_code == 1


def test_an_infinite_loop_is_stopped_by_the_wall_clock_and_by_cpu_time():
    t0 = time.monotonic()
    r = run_python("while True: pass", timeout_s=1.0, cpu_s=30)
    assert r.timed_out and r.killed and r.limit == "wall_time" and r.exit_code is None
    assert time.monotonic() - t0 < 6
    r = run_python("while True: pass", timeout_s=20.0, cpu_s=1)  # the kernel's RLIMIT_CPU, not our clock
    assert not r.timed_out and r.killed and r.limit == "cpu_time" and r.wall_s < 10


def test_a_memory_bomb_is_refused():
    r = run_python("x = bytearray(4 << 30)\nprint('GOT IT')", memory_mb=256)
    assert r.limit == "memory" and "MemoryError" in r.stderr and "GOT IT" not in r.stdout
    r = run_python("x = bytearray(64 << 20)\nprint(len(x))", memory_mb=256)  # within the limit: fine
    assert r.stdout == f"{64 << 20}\n"


def test_a_fork_bomb_is_stopped_and_leaves_nothing_behind():
    r = run_python("import os, time\nn = 0\nwhile True:\n    if os.fork() == 0:\n        time.sleep(30)\n"
                   "        os._exit(0)\n    n += 1", processes=8, timeout_s=3)
    assert r.limit == "processes" and "BlockingIOError" in r.stderr
    deadline = time.monotonic() + 5
    while _sandbox_uid_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandbox_uid_processes() == []  # the pid namespace died with the sandbox


def test_100_mb_of_output_is_cut_and_the_program_killed():
    t0 = time.monotonic()
    r = run_python("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))", max_output=1 << 20,
                   max_output_chars=100)
    assert r.killed and r.limit == "output" and time.monotonic() - t0 < 5
    assert r.stdout.startswith("x" * 100) and "more characters]" in r.stdout and len(r.stdout) < 200


def test_without_bwrap_it_refuses_unless_told_unsafe(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    with pytest.raises(SandboxUnavailable, match="needs bubblewrap"):
        run_python("print(1)")
    r = run_python("import os\nprint(2 + 2, os.path.exists('/etc/passwd'))", unsafe_no_sandbox=True)
    assert r.stdout == "4 True\n"  # it ran, and it sees the host: unsafe
