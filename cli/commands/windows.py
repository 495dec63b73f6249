"""``diffconv windows``: every window name the commands accept, with parameters and defaults."""

from __future__ import annotations

import click

from cli.options import version_option


@click.command(name="windows")
@version_option
def windows() -> None:
    """List the windows (for --window) with their aliases, parameters and defaults.

    Parameters are given to smooth, filter, grad and fit as --param NAME=VALUE (e.g.
    --window gaussian --param std=5).
    """
    from diffconv_core.windows import list_windows

    for entry in list_windows():
        click.echo(format_window(entry))


def format_window(entry: dict) -> str:
    """One line per window: ``name (aliases): description; params``.

    Example:
        >>> format_window({"name": "gaussian", "aliases": ["gauss"], "description": "Gaussian",
        ...                "params": {"std": None}, "required": ["std"],
        ...                "ranges": {"std": "> 0"}})
        'gaussian (gauss): Gaussian; params: std (required, > 0)'
    """
    head = entry["name"]
    if entry.get("aliases"):
        head += f" ({', '.join(entry['aliases'])})"
    text = f"{head}: {entry.get('description', '')}"
    params = []
    for name, default in entry.get("params", {}).items():
        notes = ["required"] if name in entry.get("required", []) else [f"default {default}"]
        if name in entry.get("ranges", {}):
            notes.append(entry["ranges"][name])
        params.append(f"{name} ({', '.join(notes)})")
    if params:
        text += "; params: " + ", ".join(params)
    return text
