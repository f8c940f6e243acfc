"""Parsing of the HxW size strings every command takes."""

from __future__ import annotations

from fcn_deploy.core.errors import FcnDeployError


def parse_hw(text: str, what: str = "size") -> tuple[int, int]:
    """'360x480' -> (360, 480). Both sides must be positive integers."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        h, w = int(parts[0]), int(parts[1])
    except ValueError:
        raise FcnDeployError(f"{what} {text!r}: expected HEIGHTxWIDTH, e.g. 360x480") from None
    if h <= 0 or w <= 0:
        raise FcnDeployError(f"{what} {text!r}: height and width must be positive, e.g. 360x480")
    return h, w


def parse_hw_list(text: str, what: str = "sizes") -> list[tuple[int, int]]:
    """'360x480,180x240' -> [(360, 480), (180, 240)]."""
    items = [s for s in str(text).split(",") if s.strip()]
    if not items:
        raise FcnDeployError(f"{what} {text!r}: give at least one HEIGHTxWIDTH")
    return [parse_hw(s.strip(), what) for s in items]


def format_hw(hw: tuple[int, int] | list[int]) -> str:
    return f"{hw[0]}x{hw[1]}"
