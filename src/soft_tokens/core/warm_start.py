"""Jobs forked from one warm process. A job's own work on a small model takes a fraction of a second, but
starting Python with torch, transformers and pandas takes about 4 s on two cores: 80% of a smoke run's
job time. So a local run starts one server (`start`, from the Snakefile's onstart) that imports those
libraries once and forks a copy of itself for each job. The job's script, first thing
(runlog.start_job), hands the server its working directory, environment, arguments and standard
streams, and exits with the fork's status; the fork runs the script from the top as a new process
would. No soft_tokens module is ever imported by the server, so every job runs the code of its own
checkout.

Only where it is safe: Linux (fork after these imports), models on the CPU (CUDA does not survive a
fork), local execution, no conda environments (a job must run in the server's Python; the server
checks it), and not with SOFT_TOKENS_WARM_START=0. A job that finds no server, or one still
importing, runs as it is. Standard library only at the top: trivial jobs import nothing more.

Snakemake's benchmark files then time each job correctly (their `s` column), but their CPU and memory
columns measure the waiting launcher, not the fork: set SOFT_TOKENS_WARM_START=0 to measure those.
"""

import atexit
import gc
import json
import os
import re
import runpy
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Set to 0 to run every job in a fresh process.
SWITCH = "SOFT_TOKENS_WARM_START"
# The server's socket, in the environment Snakemake passes to its jobs.
ADDRESS = "SOFT_TOKENS_WARM_SERVER"
# What the jobs import that takes seconds; imported once, by the server.
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "peft", "pandas", "pyarrow.parquet",
           "scipy.stats", "matplotlib.pyplot", "tqdm", "yaml", "jinja2", "snakemake.iocontainers",
           "snakemake.logging")
# Each message is a length (8 bytes) and a JSON body; the first carries the job's stdin, stdout, stderr.
HEADER = struct.Struct("!q")
REFUSED = 0
GPU_FILE = re.compile(r"nvidia\d+|kfd")
# What a launcher passes on to its job's fork (Snakemake and `kill` end jobs with these).
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def wanted(workflow, device: str) -> bool:
    """Whether a warm server fits this Snakemake run, whose models run on `device` (the config's key):
    see the module's docstring."""
    from snakemake.settings.types import DeploymentMethod

    return (sys.platform == "linux" and os.environ.get(SWITCH, "1") != "0" and on_cpu(device)
            and workflow.local_exec and not workflow.dryrun
            and DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method)


def on_cpu(device: str) -> bool:
    """Whether the jobs will run on the CPU: a process that has touched CUDA cannot be forked for a job
    that uses it, and the preloaded libraries may touch it, so runs on a GPU start each job fresh. For
    `auto`, a GPU's device file (NVIDIA's or AMD's) means CUDA is there to be found."""
    return device == "cpu" or (device == "auto" and not any(map(GPU_FILE.fullmatch, os.listdir("/dev"))))


def start(log: Path, preload=PRELOAD) -> subprocess.Popen:
    """Start a server (its messages to `log`) importing `preload`, and point this process's future jobs at
    it. It takes jobs once it has preloaded; one that comes earlier starts fresh rather than wait: a job of
    a local rule imports none of it, and one that does imports it as fast itself."""
    address = Path(tempfile.mkdtemp(prefix="soft-tokens-")) / "warm.sock"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, __file__, str(address), *preload], stdin=subprocess.DEVNULL,
                                  stdout=sink, stderr=sink)
    while not address.exists():
        if server.poll() is not None:
            raise RuntimeError(f"the warm-start server stopped at once (exit {server.returncode}): see {log}")
        time.sleep(0.01)
    os.environ[ADDRESS] = str(address)
    return server


def stop(server: subprocess.Popen) -> None:
    """End the server (jobs it forked run on) and remove its socket."""
    os.environ.pop(ADDRESS, None)
    server.terminate()
    server.wait()
    address = Path(server.args[2])
    address.unlink(missing_ok=True)
    if address.parent.exists():
        address.parent.rmdir()


def send(conn: socket.socket, body: dict, fds=()) -> None:
    data = json.dumps(body).encode()
    socket.send_fds(conn, [HEADER.pack(len(data))], list(fds))
    conn.sendall(data)


def receive_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def run_in_warm_fork() -> None:
    """In a job's script: if a warm server is running, run this script in a fork of it, passing signals
    on, and exit with its status. Returns where there is no server, or it refuses this Python, or it
    stops before it forks."""
    address = os.environ.get(ADDRESS)
    if not address:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        return
    from soft_tokens.core.phases import LAUNCHED, process_seconds

    fork, pending = [], []  # a signal before the fork is known is passed on once it is

    def forward(received, frame):
        if fork:
            os.kill(fork[0], received)
        else:
            pending.append(received)

    before = {number: signal.signal(number, forward) for number in FORWARDED}
    env = {**os.environ, LAUNCHED: str(time.time() - process_seconds())}  # its start-up counts this one's
    try:
        send(conn, {"python": sys.executable, "script": os.path.realpath(sys.argv[0]), "argv": sys.argv,
                    "cwd": os.getcwd(), "env": env}, fds=(0, 1, 2))
        (pid,) = HEADER.unpack(receive_exactly(conn, HEADER.size))
    except (OSError, EOFError):  # the server stopped before it forked: run here
        pid = REFUSED
    if pid == REFUSED:
        for number, handler in before.items():
            signal.signal(number, handler)
        for number in pending:
            os.kill(os.getpid(), number)
        return
    fork.append(pid)
    for number in pending:
        os.kill(pid, number)
    try:
        (status,) = HEADER.unpack(receive_exactly(conn, HEADER.size))
    except (OSError, EOFError):
        sys.exit(f"the job's process (PID {pid}) ended without an exit status: killed by a signal?")
    sys.exit(status)


def serve(address: str, preload: list[str]) -> None:
    """Bind `address`, import `preload`, then listen and fork a job for each connection, until the process
    that started this one has gone (checked every second; `stop` ends it sooner)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)  # connecting is refused until it listens: a job until then starts fresh
    parent = os.getppid()
    began = time.perf_counter()
    gc.disable()  # no collection leaves holes among the preloaded objects; each fork collects its own
    for name in preload:
        __import__(name)
    gc.freeze()  # so a fork's collections skip them, rather than visit (and copy) every one: a first model load
    # in a fork took 0.5 s, 0.25 s frozen
    listener.listen(64)
    print(f"{len(preload)} modules preloaded in {time.perf_counter() - began:.1f} s", flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    listener.settimeout(1.0)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(60.0)  # a launcher that dies before its request must not stall the others
        try:
            message, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
            request = json.loads(receive_exactly(conn, HEADER.unpack(message)[0]))
        except (OSError, EOFError, ValueError, struct.error):
            conn.close()
            continue
        conn.settimeout(None)
        if request["python"] != sys.executable:
            conn.sendall(HEADER.pack(REFUSED))
        elif os.fork() == 0:
            listener.close()
            run_job(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()
    os.unlink(address)
    os.rmdir(os.path.dirname(address))


def run_job(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the fork: become the job's process (its streams, directory, environment and arguments), run its
    script as __main__, write the status as Python would exit with it, and exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    gc.enable()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({k: v for k, v in request["env"].items() if k != ADDRESS})
    sys.argv = request["argv"]
    sys.path[0] = os.path.dirname(request["script"])
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as a fresh process sets it for its stdout
    tempfile.tempdir = None  # found again from the job's environment
    if "numpy" in sys.modules:  # a fresh process draws its own seed; Python's random reseeds after a fork
        sys.modules["numpy"].random.seed()
    conn.sendall(HEADER.pack(os.getpid()))
    try:
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = exit_status(stop.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(HEADER.pack(status))
    finally:
        os._exit(status)


def exit_status(code) -> int:
    """The status Python exits with on SystemExit(code), printing a message as it does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        serve(sys.argv[1], sys.argv[2:])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
