"""``python -m gensis`` in a fresh process per call, forked from a zygote that has already imported torch,
Lightning, timm, diffusers and gensis's commands, so that a test does not pay those imports (several
seconds) on every call.

The zygote is a child of the test process (``python -m tests.forked_cli``), started on first use. Per
call it forks; the fork starts a new session, takes the caller's environment, working directory and
argv, writes stdout and stderr to files, runs ``gensis`` as ``python -m gensis`` would (``__main__``,
SystemExit codes, a traceback and code 1 for an uncaught exception, atexit handlers) and exits. What a
fresh interpreter reads only at start-up (``PYTHONPATH``'s sitecustomize, OpenMP's thread count) is the
zygote's, so a call that needs its own start-up environment runs as a plain subprocess (``fresh=True``).
``GENSIS_TEST_FRESH_CLI=1`` runs every call that way.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

PRELOAD = ("torch", "torchvision", "lightning", "timm", "diffusers", "h5py", "skimage", "matplotlib.pyplot",
           "stages.stage1", "stages.stage2", "stages.stage3", "stages.autoencoder", "gensis.demo_run",
           "gensis.diffusion.generate_run", "gensis.evaluation.embed_run", "gensis.evaluation.eval_run",
           "gensis.evaluation.generation_quality", "gensis.evaluation.mil_run",
           "gensis.evaluation.slide_features", "gensis.slides.tiling")


def exit_code(code) -> int:
    """The process exit status Python gives ``SystemExit(code)`` (a message is printed and gives 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_gensis_here(args: list[str]) -> int:
    """Run ``gensis args`` in this process as ``python -m gensis`` would; the exit status."""
    import runpy
    import traceback

    sys.argv = ["gensis", *args]
    try:
        runpy.run_module("gensis", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        return exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
        return 1


def child(request: dict) -> None:
    """In the fork: become the process ``subprocess.run([python, -m, gensis, ...])`` would have started."""
    import atexit

    os.setsid()   # its own process group: a timeout kills it and whatever it started (DDP ranks, workers)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()   # as -m puts the working directory first
    for fd, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        os.dup2(opened, fd)
        os.close(opened)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()   # a fresh process draws its own; Python's random reseeds at fork
    code = run_gensis_here(request["args"])
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    """The zygote: import once, then per request line fork a child, answer its pid, then its exit status."""
    import importlib

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError:
            pass   # an optional extra not installed: the child imports what it needs
    if threading.active_count() != 1:   # a fork keeps only the forking thread: no other may hold a lock
        raise SystemExit(f"forked_cli: the preloaded modules started threads ({threading.enumerate()})")
    requests, answers = sys.stdin, os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)   # only answers go back through the pipe
    answers.write("ready\n")
    answers.flush()
    for line in requests:
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            child(json.loads(line))
        answers.write(f"{pid}\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answers.flush()


def kill_group(pid: int) -> None:
    """SIGKILL a child's process group (it and what it started), if it is still there."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Zygote:
    """The test process's end of one zygote."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen([sys.executable, "-m", "tests.forked_cli"], cwd=root, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.process.stdout.readline() != "ready\n":
            raise RuntimeError(f"forked_cli: the zygote did not start (exit status {self.process.wait()})")

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, args: list[str], cwd, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            open(out, "w").close()
            open(err, "w").close()
            request = {"args": args, "cwd": os.path.abspath(cwd or os.getcwd()), "env": dict(os.environ),
                       "stdout": out, "stderr": err}
            pid = None
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                pid = int(self.process.stdout.readline())
                ready, _, _ = select.select([self.process.stdout], [], [], timeout)
                if not ready:
                    kill_group(pid)
                returncode = int(self.process.stdout.readline())
            except BaseException:   # interrupted, or the zygote died: end both, a later call starts anew
                if pid is not None:
                    kill_group(pid)
                self.process.kill()
                raise
            stdout, stderr = open(out).read(), open(err).read()
        command = [sys.executable, "-m", "gensis", *args]
        if not ready:
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


_zygote: Zygote | None = None


def run_cli(args: list[str], cwd=None, env: dict | None = None, timeout: float = 1800,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """``gensis args`` in a fresh process (``env``: extra environment variables, which need a plain
    subprocess, as does ``fresh``)."""
    global _zygote
    if fresh or env or os.environ.get("GENSIS_TEST_FRESH_CLI") == "1":
        return subprocess.run([sys.executable, "-m", "gensis", *args], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env={**os.environ, **env} if env else None)
    if _zygote is None or not _zygote.alive():
        _zygote = Zygote()
    return _zygote.run(args, cwd, timeout)


def stop() -> None:
    """End the zygote (at the end of the test session)."""
    global _zygote
    if _zygote is not None and _zygote.alive():
        _zygote.close()
    _zygote = None


if __name__ == "__main__":
    serve()
