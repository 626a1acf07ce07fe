"""``python -m gensis`` in a fresh process per call, forked from a zygote that has already imported torch,
Lightning, timm, diffusers and gensis's commands, so that a test does not pay those imports (several
seconds) on every call.

The zygote is a child of the test process (``python -m tests.forked_cli``), started on first use. Per
call it forks; the fork starts a new session, takes the caller's environment, working directory and
argv, runs ``gensis`` as ``python -m gensis`` would (``__main__``, SystemExit codes, a traceback and
code 1 for an uncaught exception, threads joined, atexit handlers) and exits. As with
``subprocess.run(capture_output=True)``, stdout and stderr are pipes read to their end, so a call returns
once every process it started (DDP ranks, workers) has let go of them.

What a fresh interpreter settles at start-up stays the zygote's: its imports (``gensis tile`` picks its
pool's start method by whether torch is loaded, so ``tile`` and ``demo`` run fresh), variables read at start-up
(a call whose OMP_*, PYTHON*, CUDA_* ... differ from the zygote's runs fresh, as does one with ``env=``)
and Python's hash seed. ``GENSIS_TEST_FRESH_CLI=1`` runs every call as a plain ``python -m gensis``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import warnings

PRELOAD = ("torch", "torchvision", "lightning", "timm", "diffusers", "h5py", "skimage", "sklearn",
           "matplotlib.pyplot", "stages.stage1", "stages.stage2", "stages.stage3", "stages.autoencoder",
           "gensis.demo_run", "gensis.diffusion.generate_run", "gensis.evaluation.embed_run",
           "gensis.evaluation.eval_run", "gensis.evaluation.generation_quality", "gensis.evaluation.mil_run",
           "gensis.evaluation.slide_features", "gensis.slides.tiling")
FRESH_COMMANDS = ("tile", "demo")   # tiling picks its pool's start method by what is imported: run as users do
STARTUP_VARIABLES = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "PYTHON", "CUDA_", "LD_", "MPLBACKEND", "HF_", "TORCH",
                     "NUMEXPR_")
START_ENVIRONMENT = dict(os.environ)   # the zygote's: the session's, not what a test has set when it first calls


def exit_code(code) -> int:
    """The process exit status Python gives ``SystemExit(code)`` (a message is printed and gives 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_gensis_here(args: list[str]) -> int:
    """Run ``gensis args`` in this process as ``python -m gensis`` would; the exit status (-2: interrupted)."""
    import runpy
    import traceback

    sys.argv = ["gensis", *args]
    try:
        runpy.run_module("gensis", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as stop:
        return exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1


def child(request: dict, stdout: int, stderr: int) -> None:
    """In the fork: become the process ``subprocess.run([python, -m, gensis, ...])`` would have started."""
    import atexit
    import ctypes

    os.setsid()   # its own process group: a timeout kills it and whatever it started (DDP ranks, workers)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()   # as -m puts the working directory first
    null = os.open(os.devnull, os.O_RDONLY)
    for source, fd in ((null, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, fd)
        os.close(source)
    sys.stdin = open(0, closefd=False)
    for module, reseed in (("numpy", lambda np: np.random.seed()), ("torch", lambda torch: torch.seed())):
        if module in sys.modules:   # a fresh process draws its own seeds; Python's random reseeds at fork
            reseed(sys.modules[module])
    code = run_gensis_here(request["args"])
    try:
        threading._shutdown()   # as the interpreter does at exit: join non-daemon threads
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        ctypes.CDLL(None).fflush(None)   # what C libraries printed
        if code == -signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def copy_to_the_end(pipes: dict[int, str]) -> None:
    """Copy each read end into its file until every writer has closed it (as ``communicate`` reads)."""
    files = {fd: open(path, "wb") for fd, path in pipes.items()}
    with selectors.DefaultSelector() as selector:
        for fd in files:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                chunk = os.read(key.fd, 65536)
                if chunk:
                    files[key.fd].write(chunk)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
    for handle in files.values():
        handle.close()


def serve() -> None:
    """The zygote: import once, then per request line fork a child, answer its pid, then its exit status."""
    import importlib

    answers = os.fdopen(os.dup(1), "w")
    with tempfile.TemporaryFile() as printed:   # what the imports print would reach no call's stderr
        saved = os.dup(2)
        os.dup2(printed.fileno(), 2)
        for module in PRELOAD:
            try:
                importlib.import_module(module)
            except ImportError:
                pass   # an optional extra not installed: the child imports what it needs
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        printed.seek(0)
        text = printed.read().decode(errors="replace")
    unusable = None
    if text:
        unusable = f"importing the preloaded modules printed {text!r}, which no call's stderr would show"
    elif threading.active_count() != 1:
        unusable = f"the preloaded modules started threads {threading.enumerate()} (a fork keeps only its own)"
    if unusable:
        answers.write(f"unusable: {unusable}\n")
        answers.flush()
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)   # only answers go back through the pipe
    os.close(null)
    answers.write(f"ready {json.dumps(dict(os.environ))}\n")   # as its imports left it (sklearn sets KMP_*)
    answers.flush()
    for line in sys.stdin:
        request = json.loads(line)
        (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:
            answers.close()   # fd 0 (the requests) is replaced in child()
            os.close(out_read)
            os.close(err_read)
            child(request, out_write, err_write)   # never returns
        os.close(out_write)
        os.close(err_write)
        answers.write(f"{pid}\n")
        answers.flush()
        copy_to_the_end({out_read: request["stdout"], err_read: request["stderr"]})
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answers.flush()


def kill_group(pid: int) -> None:
    """SIGKILL a child's process group (it and what it started), if it is still there."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        try:
            os.kill(pid, signal.SIGKILL)   # not yet its own group leader
        except ProcessLookupError:
            pass


class Zygote:
    """The test process's end of one zygote."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen([sys.executable, "-m", "tests.forked_cli"], cwd=root, text=True,
                                        env=START_ENVIRONMENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            self.process.kill()
            raise RuntimeError(line.strip() or f"the zygote did not start (exit status {self.process.wait()})")
        self.environment = json.loads(line.removeprefix("ready "))

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, args: list[str], cwd, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            request = {"args": args, "cwd": os.path.abspath(cwd or os.getcwd()), "env": dict(os.environ),
                       "stdout": out, "stderr": err}
            pid, timers, timed_out = None, [], threading.Event()

            def expire():
                timed_out.set()
                kill_group(pid)
                # a process that left the group could still hold the pipes: then give up on this zygote
                timers.append(threading.Timer(30, self.process.kill))
                timers[-1].start()

            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                pid = int(self.process.stdout.readline())
                timers.append(threading.Timer(timeout, expire))
                timers[0].start()
                returncode = int(self.process.stdout.readline())
            except BaseException:   # interrupted, or the zygote died: end both, a later call starts anew
                if pid is not None:
                    kill_group(pid)
                self.process.kill()
                if not timed_out.is_set():
                    raise
                returncode = None
            finally:
                for timer in list(timers):
                    timer.cancel()
            with open(out) as handle:
                stdout = handle.read()
            with open(err) as handle:
                stderr = handle.read()
        command = [sys.executable, "-m", "gensis", *args]
        if timed_out.is_set():
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


_zygote: Zygote | None = None
_unusable: str | None = None   # why the zygote cannot serve: every call then runs fresh


def starts_fresh(args: list[str], env: dict | None) -> bool:
    """A call that runs as a plain subprocess whatever the zygote (see the module's docstring)."""
    return bool(env) or os.environ.get("GENSIS_TEST_FRESH_CLI") == "1" or bool(args and args[0] in FRESH_COMMANDS)


def startup_differs(zygote_environment: dict) -> bool:
    """Whether this process's environment sets a variable read at start-up to other than the zygote's value
    (variables the zygote's imports set, and the caller lacks, a fresh process's imports set too)."""
    return any(name.startswith(STARTUP_VARIABLES) and value != zygote_environment.get(name)
               for name, value in os.environ.items())


def run_cli(args: list[str], cwd=None, env: dict | None = None, timeout: float = 1800,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """``gensis args`` in a fresh process (``env``: extra environment variables)."""
    global _zygote, _unusable

    def plain() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gensis", *args], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env={**os.environ, **env} if env else None)

    if fresh or _unusable or starts_fresh(args, env):
        return plain()   # before starting a zygote that this call would not use
    if _zygote is None or not _zygote.alive():
        try:
            _zygote = Zygote()
        except RuntimeError as err:
            _unusable = str(err)
            warnings.warn(f"forked_cli: {_unusable}; every gensis call of this session runs as a fresh process")
            return plain()
    return plain() if startup_differs(_zygote.environment) else _zygote.run(args, cwd, timeout)


def stop() -> None:
    """End the zygote (at the end of the test session)."""
    global _zygote
    if _zygote is not None and _zygote.alive():
        _zygote.close()
    _zygote = None


if __name__ == "__main__":
    serve()
