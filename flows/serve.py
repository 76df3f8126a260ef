"""`python -m flows.serve` (`make serve`): serve this project's deployments.

    ablation/ablation    one FDD variant (+ seed, + params overrides) as a DVC experiment
    sweep/sweep          several variants x seeds, `limit` at once
    reproduce/reproduce  `dvc repro` in the workspace

With no `PREFECT_API_URL` in the environment it first starts a local Prefect server on
127.0.0.1 (`--port`, home in `.prefect/`), prints the URL to export in another terminal, and
stops it on exit. Then, e.g.:

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    prefect deployment run 'ablation/ablation' --param variant=no_sds --watch
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_server(host: str, port: int, home: Path, timeout: float = 120.0) -> subprocess.Popen:
    """A Prefect server in its own process group, returned once /api/health answers."""
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}/api/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {home / 'server.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"prefect server not healthy at {url} after {timeout:.0f} s; see {home / 'server.log'}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="where a server started here listens (default: loopback only)")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args()
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        home = Path(os.environ.get("PREFECT_HOME", ".prefect")).resolve()
        os.environ["PREFECT_HOME"] = str(home)
        server = start_server(args.host, args.port, home)
        os.environ["PREFECT_API_URL"] = f"http://{args.host}:{args.port}/api"
        print(f"Prefect server on {os.environ['PREFECT_API_URL']} (UI at http://{args.host}:{args.port}); in another terminal:\n"
              f"  export PREFECT_API_URL={os.environ['PREFECT_API_URL']}", flush=True)
    try:
        from prefect import serve

        from .ablation import ablation, reproduce, sweep

        serve(ablation.to_deployment(name="ablation"), sweep.to_deployment(name="sweep"), reproduce.to_deployment(name="reproduce"))
    finally:
        if server is not None:
            stop(server)


if __name__ == "__main__":
    main()
