"""The `fcn-deploy` command: a click group whose subcommands are imported only when used.

`fcn-deploy --help` must not import torch, onnx, onnxruntime, tensorrt or cv2 (tests/test_cli.py checks it), so
each subcommand module imports its heavy dependencies inside the command function.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import threading
from collections.abc import Iterator

import click

from fcn_deploy import __version__
from fcn_deploy.core.errors import FcnDeployError

# name -> "module:attribute"; one line per command, kept in the order a user meets them.
COMMANDS = {
    "model-info": "fcn_deploy.cli.model_info:command",
    "export": "fcn_deploy.cli.export:command",
    "quantize": "fcn_deploy.cli.quantize:command",
    "build-engine": "fcn_deploy.cli.build_engine:command",
    "train": "fcn_deploy.cli.train:command",
    "evaluate": "fcn_deploy.cli.evaluate:command",
    "infer": "fcn_deploy.cli.infer:command",
    "profile": "fcn_deploy.cli.profile:command",
    "report": "fcn_deploy.cli.report:command",
    "package": "fcn_deploy.cli.package:command",
    "serve": "fcn_deploy.cli.serve:command",
    "demo": "fcn_deploy.cli.demo:command",
    "doctor": "fcn_deploy.cli.doctor:command",
}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that every writer's cleanup runs."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM's default action ends the process on the spot, leaving its temp files: unwind instead. A handler
    a command installs itself (the pipeline, torchrun workers) takes precedence while it is installed."""
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupted(signum: int) -> click.ClickException:
    """Ctrl-C or SIGTERM: remove what this run had not published, then one line and 128 + the signal number."""
    from fcn_deploy.core.atomic import remove_own_temps

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None  # a further Ctrl-C waits
    try:
        removed = remove_own_temps()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    name = signal.Signals(signum).name
    exc = click.ClickException(
        f"interrupted ({name}): stopped before finishing; nothing half-written was published"
        + (f" ({len(removed)} temporary file(s) removed)" if removed else "")
    )
    exc.exit_code = 128 + signum
    return exc


class LazyGroup(click.Group):
    """click's documented lazy-loading recipe, plus one-line output for FcnDeployError."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            with _sigterm_unwinds():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _interrupted(signal.SIGINT) from None
        except Terminated:
            raise _interrupted(signal.SIGTERM) from None
        except FcnDeployError as e:
            exc = click.ClickException(str(e).replace("\n", " "))
            exc.exit_code = e.exit_code
            raise exc from None
        except OSError as e:
            # The environment, not the program: a full disk, quota, read-only or unreadable file, named in one line.
            # Any other OSError (a bug's wrong path, ...) keeps its traceback.
            from fcn_deploy.core.atomic import WRITE_ERRNOS

            if e.errno not in WRITE_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}; free space or fix the permissions") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="fcn-deploy")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """FCN semantic segmentation: train, export to ONNX, lower to FP16/INT8, build TensorRT engines, run, report."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
