"""soft_tokens.core.warm_start: a script run in a fork of the warm server sees what it would see in a fresh
process (arguments, directory, environment, standard streams), ends with the same status and message,
and can be stopped through its launcher; before it has preloaded, a job starts fresh. (The smoke run is warm
and test_workflow's reduced rerun starts its first jobs fresh: the two write the same numbers.)"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from runner import ROOT, gone

from soft_tokens.core import warm_start
from soft_tokens.core.warm_start import ADDRESS, HEADER, REFUSED, on_cpu, receive_exactly, send, start, stop

SCRIPT = textwrap.dedent(f"""
    import json, os, sys, time
    preloaded = "decimal" in sys.modules
    sys.path.insert(0, {str(ROOT / "src")!r})
    from soft_tokens.core.warm_start import run_in_warm_fork
    run_in_warm_fork()
    print(json.dumps({{"pid": os.getpid(), "parent": os.getppid(), "preloaded": preloaded, "cwd": os.getcwd(),
                      "flag": os.environ.get("FLAG"), "server": os.environ.get("{ADDRESS}"),
                      "argv": sys.argv[1:], "stdin": sys.stdin.readline().strip()}}), flush=True)
    what = sys.argv[1]
    if what == "code":
        sys.exit(3)
    if what == "message":
        sys.exit("stopped on purpose")
    if what == "raise":
        raise ValueError("broken on purpose")
    if what == "sleep":
        time.sleep(120)
""")


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.delenv(ADDRESS, raising=False)
    running = start(tmp_path / "warm.log", preload=("decimal",))
    while "modules preloaded" not in (tmp_path / "warm.log").read_text():
        time.sleep(0.01)
    yield running
    stop(running)


def launch(tmp_path, what: str, warm: bool) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    (tmp_path / "there").mkdir(exist_ok=True)
    env = {**os.environ, "FLAG": "set"}
    if not warm:
        env.pop(ADDRESS)
    return subprocess.Popen([sys.executable, str(script), what], cwd=tmp_path / "there", env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(tmp_path, what: str, warm: bool):
    job = launch(tmp_path, what, warm)
    out, err = job.communicate("hello\n", timeout=60)
    return job.returncode, json.loads(out.splitlines()[0]), err


@pytest.mark.parametrize("what, status, message", [("ok", 0, ""), ("code", 3, ""), ("message", 1, "stopped on purpose"),
                                                   ("raise", 1, "ValueError: broken on purpose")])
def test_a_forked_job_sees_and_ends_as_a_fresh_process_would(server, tmp_path, what, status, message):
    warm_status, warm, warm_err = run(tmp_path, what, warm=True)
    cold_status, cold, cold_err = run(tmp_path, what, warm=False)
    assert warm["parent"] == server.pid and warm["preloaded"]  # a fork of the server, with its imports
    assert cold["parent"] == os.getpid() and not cold["preloaded"]
    assert warm_status == cold_status == status
    assert message in warm_err and message in cold_err and ("Traceback" in warm_err) == ("Traceback" in cold_err)
    for seen in (warm, cold):
        assert seen["cwd"] == str(tmp_path / "there") and seen["flag"] == "set" and seen["server"] is None
        assert seen["argv"] == [what] and seen["stdin"] == "hello"


def test_a_signal_to_the_launcher_ends_the_fork(server, tmp_path):
    job = launch(tmp_path, "sleep", warm=True)
    job.stdin.write("hello\n")
    job.stdin.flush()
    fork = json.loads(job.stdout.readline())["pid"]
    assert fork != job.pid
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) != 0
    deadline = time.monotonic() + 30
    while not gone(fork) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(fork)


def test_a_job_that_comes_before_the_preload_has_ended_starts_fresh(tmp_path, monkeypatch):
    monkeypatch.delenv(ADDRESS, raising=False)
    slow = tmp_path / "slow_import.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    running = start(tmp_path / "warm.log", preload=("slow_import",))
    try:
        began = time.monotonic()
        status, seen, err = run(tmp_path, "ok", warm=True)
        assert status == 0 and seen["parent"] == os.getpid() and not seen["preloaded"], err
        assert time.monotonic() - began < 20  # it did not wait for the server
    finally:
        stop(running)


def test_the_server_refuses_a_job_of_another_python(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(os.environ[ADDRESS])
        send(conn, {"python": "/elsewhere/bin/python", "script": "job.py", "argv": [], "cwd": "/", "env": {}},
             fds=(0, 1, 2))
        assert HEADER.unpack(receive_exactly(conn, HEADER.size)) == (REFUSED,)


def test_a_job_whose_server_stops_before_forking_runs_in_its_own_process(tmp_path, monkeypatch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "warm.sock"))
        listener.listen(1)
        monkeypatch.setenv(ADDRESS, str(tmp_path / "warm.sock"))
        job = launch(tmp_path, "ok", warm=True)
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.close()  # as a server ended while the request came
        out, err = job.communicate("hello\n", timeout=60)
    assert job.returncode == 0, err
    assert json.loads(out)["parent"] == os.getpid()


def test_the_server_ends_and_cleans_up_when_its_starter_is_killed(tmp_path):
    starter = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT / "src")!r})
        from pathlib import Path
        from soft_tokens.core.warm_start import ADDRESS, start
        server = start(Path({str(tmp_path / "warm.log")!r}), preload=())
        print(server.pid, os.environ[ADDRESS], flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    pid, address = starter.stdout.readline().split()
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 30
    while not gone(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(int(pid)) and not os.path.exists(os.path.dirname(address))


def test_logging_handlers_made_before_the_job_follow_its_log(tmp_path):
    """A library imported by the warm server before the job began logs to its own handler on standard
    error: log_to moves it to the job's log file, where it would have been made in a fresh process."""
    log = tmp_path / "job.log"
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import logging, sys
        sys.path.insert(0, {str(ROOT / "src")!r})
        library = logging.getLogger("library")
        library.addHandler(logging.StreamHandler())
        library.propagate = False
        from soft_tokens.core.runlog import log_to
        log_to({str(log)!r})
        library.warning("said by the library")
    """)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "said by the library" not in run.stderr
    assert "said by the library" in log.read_text()


def test_runs_on_a_gpu_start_every_job_fresh(monkeypatch):
    monkeypatch.setattr(warm_start.os, "listdir", lambda folder: ["null", "nvidia0", "nvidiactl"])
    assert on_cpu("cpu") and not on_cpu("auto") and not on_cpu("cuda") and not on_cpu("cuda:1")
    monkeypatch.setattr(warm_start.os, "listdir", lambda folder: ["null", "kfd"])
    assert not on_cpu("auto")
    monkeypatch.setattr(warm_start.os, "listdir", lambda folder: ["null", "nvidiactl", "tty0"])
    assert on_cpu("auto") and not on_cpu("cuda")
