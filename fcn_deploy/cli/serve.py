"""`fcn-deploy serve`: run tritonserver on a model repository until Ctrl-C."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("repository", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Append the server's log to FILE.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for readiness.")
def command(repository, host, http_port, grpc_port, log_file, timeout) -> None:
    """Start tritonserver (the one on PATH, else nvidia-pytriton's) on REPOSITORY, wait until every model is
    ready, print the URLs, and stop it cleanly on Ctrl-C (exit 130) or SIGTERM (143); exit non-zero if the server dies."""
    import signal
    import time

    from fcn_deploy.core.errors import FcnDeployError
    from fcn_deploy.serving.server import TritonServer

    stopped_by = {}

    def stop(signum, frame):  # SIGTERM (docker, systemd) stops the server like Ctrl-C does
        stopped_by["signal"] = signum
        raise KeyboardInterrupt

    # Also when started in the background, where SIGINT arrives ignored and Python would not raise on it.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server = TritonServer(repository, host, http_port, grpc_port, log_file=log_file)
    try:
        server.start(timeout)
        click.echo(f"serving {server.repository}: HTTP {server.http_url}, gRPC {server.grpc_url}; Ctrl-C stops it")
        click.echo(f"  e.g. fcn-deploy infer triton://{server.http_url}/MODEL --source images/")
        while server.alive():
            time.sleep(0.5)
        raise FcnDeployError(f"{repository}: tritonserver exited with code {server.process.returncode}")
    except KeyboardInterrupt:
        server.stop()
        click.echo("stopped")
        raise SystemExit(143 if stopped_by.get("signal") == signal.SIGTERM else 130) from None
    finally:
        server.stop()
