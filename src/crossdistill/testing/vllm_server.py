"""Start and stop a real vLLM OpenAI-compatible server on 127.0.0.1, for tests and benchmarks.

vLLM lives in its own virtual environment (it pins another transformers), ``.venv-vllm`` at the repository root,
which ``scripts/setup.sh dev`` creates; ``CROSSDISTILL_VLLM_PYTHON`` points at another interpreter. The command is
the one docs/server.md gives for CPU (fp32, eager, a 1 GiB KV cache, the model run inside the engine process rather
than a worker process of its own, which starts about half a minute sooner)::

    with VLLMServer("outputs/tiny/teacher_served") as server:     # waits until it answers (bounded)
        print(server.url)                                          # http://127.0.0.1:PORT
        server.kill()                                              # SIGKILL, as a crash would
        server.start()                                             # the same port again

The server runs in its own process group, so :meth:`stop` and :meth:`kill` end its engine and worker processes too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

VLLM_PYTHON_ENV = "CROSSDISTILL_VLLM_PYTHON"
"""Environment variable naming the Python interpreter that has vLLM installed."""


def vllm_python() -> Path | None:
    """The interpreter of the vLLM environment (``$CROSSDISTILL_VLLM_PYTHON`` or ``.venv-vllm`` at the repository
    root), or ``None`` when there is none."""
    given = os.environ.get(VLLM_PYTHON_ENV)
    if given:
        return Path(given) if Path(given).is_file() else None
    repo = Path(__file__).resolve().parents[3]
    candidate = repo / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.is_file() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process serving ``model`` on 127.0.0.1.

    Args:
        model: a model directory (Hugging Face format).
        served_name: the name clients ask for (``--served-model-name``).
        port: a port; ``None`` picks a free one.
        log: where the server's output goes (default: ``server-PORT.log`` next to the model).
        extra_args: more command-line arguments (e.g. ``["--max-num-seqs", "16"]``).
        env: more environment variables (e.g. ``{"VLLM_SERVER_DEV_MODE": "1"}``).
    """

    def __init__(self, model: str | Path, served_name: str = "teacher", port: int | None = None,
                 max_logprobs: int = 64, max_model_len: int = 512, dtype: str = "float32",
                 log: str | Path | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, python: str | Path | None = None, threads: int = 1):
        self.model, self.served_name = str(model), served_name
        self.port = port or free_port()
        self.max_logprobs, self.max_model_len, self.dtype = max_logprobs, max_model_len, dtype
        self.log = Path(log) if log else Path(model).parent / f"server-{self.port}.log"
        self.extra_args, self.extra_env, self.threads = list(extra_args or []), dict(env or {}), threads
        self.python = Path(python) if python else vllm_python()
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.python is None:
            raise FileNotFoundError(f"no vLLM environment: run `bash scripts/setup.sh dev` (creates .venv-vllm) or "
                                    f"set {VLLM_PYTHON_ENV} to a Python that has vllm")
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", self.dtype, "--max-model-len", str(self.max_model_len), "--max-logprobs",
                str(self.max_logprobs), "--enforce-eager", "--distributed-executor-backend", "uni", *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": str(self.threads), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
        env.pop("PYTHONPATH", None)  # the vLLM environment's own packages only
        env.update(self.extra_env)
        return env

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/models", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 600.0) -> VLLMServer:
        """Start the process and wait until ``GET /v1/models`` answers; raises ``RuntimeError`` (with the log's end)
        if it exits or is not ready within ``timeout`` seconds."""
        if self.alive():
            return self
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.environment(), start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if not self.alive():
                raise RuntimeError(f"the vLLM server exited with code {self.proc.returncode} before it was ready; "
                                   f"the end of {self.log}:\n{self.log_tail()}")
            if self.ready():
                self.startup_seconds = time.perf_counter() - t0
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the vLLM server was not ready within {timeout:.0f} s; the end of {self.log}:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the process group this object started (start_new_session)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and its engine processes at once, as a crash would; returns when they are gone."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self._wait_port_free()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            self._signal_group(signal.SIGKILL)  # leftovers of an exited server's group
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._wait_port_free()

    def _wait_port_free(self, timeout: float = 30.0) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
