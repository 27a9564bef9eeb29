"""Operations commands: ``config show``, ``service install``, ``plan`` and ``check``."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from edge.cli_support import renamed, report_errors, stderr
from edge.config.loader import UnitConfig, parse_override, profile_names, profile_path, resolve_config
from edge.config.show import render_config
from edge.errors import ConfigError
from edge.ops.checks import Status, run_checks
from edge.ops.plan import PlanInputs, make_plan
from edge.ops.service import DEFAULT_SYSTEMD_DIR, DEFAULT_USER, install_service_file, render_service_file

stdout = Console(highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Unit config YAML file.")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p",
                                                 help="A shipped hardware profile, e.g. jetson-orin-nano.")]
OldProfileOpt = Annotated[str | None, typer.Option("--unit", "-u", hidden=True, help="Old spelling of --profile.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set analysis.hop_s=2.5 (repeat).")]

config_app = typer.Typer(help="Unit configs: print the resolved settings, list shipped profiles.",
                         no_args_is_help=True)
service_app = typer.Typer(help="Run the recorder as a systemd service.", no_args_is_help=True)


def _load(config: Path | None, profile: str | None, sets: list[str] | None) -> UnitConfig:
    if config is None and profile is None:
        raise ConfigError("no config given", f"pass --config FILE or --profile one of: {', '.join(profile_names())}")
    return resolve_config(config, profile, dict(parse_override(s) for s in sets or []))


@config_app.command("show")
@report_errors
def config_show(config: ConfigOpt = None, profile: ProfileOpt = None, set_: SetOpt = None,
                old_profile: OldProfileOpt = None) -> None:
    """Print the config after defaults, file and --set overrides are applied, as a commented YAML file.

    Save it with `config show --profile PROFILE > unit.yaml`: its relative paths are relative to that file.
    """
    unit = renamed(profile, old_profile, "--unit", "--profile")
    given = dict(parse_override(s) for s in set_ or [])
    resolved = _load(config, unit, set_)
    source = config if config is not None else profile_path(unit) if unit is not None else None
    text = source.read_text(encoding="utf-8") if source is not None else ""
    origin = f"profile {unit}" if config is None else str(config)
    profile_dir = source.resolve().parent if config is None and source is not None else None
    stdout.print(render_config(resolved, text, profile_dir, Path.cwd(), origin, given), end="", markup=False)


@config_app.command("profiles")
def config_profiles() -> None:
    """List the hardware profiles shipped with this install."""
    for name in profile_names():
        stdout.print(name)


@service_app.command("install")
@report_errors
def service_install(
    config: Annotated[Path, typer.Option("--config", "-c", help="Unit config YAML file the service runs with.")],
    user: Annotated[str, typer.Option(help="Unprivileged user the recorder runs as (in group audio).")] = DEFAULT_USER,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the service file instead of writing it.")]
    = False,
    systemd_dir: Annotated[Path, typer.Option(help="Where systemd service files live.")] = DEFAULT_SYSTEMD_DIR,
    old_systemd_dir: Annotated[Path | None, typer.Option("--unit-dir", hidden=True, help="Old spelling.")] = None,
) -> None:
    """Write a systemd service file that runs `biolingual-edge run --config CONFIG` and restarts it forever."""
    resolved = resolve_config(config, None, {})
    if dry_run:
        stdout.print(render_service_file(resolved, config, user), end="")
        return
    chosen = None if systemd_dir == DEFAULT_SYSTEMD_DIR else systemd_dir
    folder = renamed(chosen, old_systemd_dir, "--unit-dir", "--systemd-dir") or DEFAULT_SYSTEMD_DIR
    result = install_service_file(resolved, config, user, folder)
    stderr.print(f"wrote {result.service_path}" + (f"; created {resolved.storage.log_dir}" if result.log_dir_created
                                                  else ""))
    if resolved.power.nvpmodel_mode is not None:
        stderr.print(f"set the power mode once: sudo nvpmodel -m {resolved.power.nvpmodel_mode}")
    stderr.print(f"start it: sudo systemctl daemon-reload && sudo systemctl enable --now {result.service_path.name}")


def _number(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "n/a (pass --ms-per-window)"
    if math.isinf(value):
        return "never"
    return f"{value:{fmt}}{unit}"


@report_errors
def plan(
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    ms_per_window: Annotated[float | None, typer.Option(help="Measured inference time per window, ms.")] = None,
    old_profile: OldProfileOpt = None,
    detections_per_hour: Annotated[float, typer.Option(help="Assumed detections per listening hour.")] = 10.0,
    card_gb: Annotated[float, typer.Option(help="SD card / disk size, GB.")] = 32.0,
    os_gb: Annotated[float, typer.Option(help="Space already used by the OS, software and bundle, GB.")] = 8.0,
    date: Annotated[str | None, typer.Option(help="Day to plan for, YYYY-MM-DD (sun times vary).")] = None,
) -> None:
    """Deployment budget: windows/day, accelerator duty, MB/day, days until the card fills, Wh/day."""
    resolved = _load(config, renamed(profile, old_profile, "--unit", "--profile"), set_)
    try:
        day = dt.date.fromisoformat(date) if date else dt.datetime.now(dt.timezone.utc).date()
    except ValueError:
        raise ConfigError(f"--date '{date}' is not YYYY-MM-DD", "e.g. --date 2025-06-21") from None
    if ms_per_window is not None and ms_per_window <= 0 or detections_per_hour < 0 or card_gb <= os_gb:
        raise ConfigError("--ms-per-window must be > 0, --detections-per-hour >= 0, --card-gb > --os-gb",
                          "check the numbers passed")
    result = make_plan(resolved, PlanInputs(day, ms_per_window, detections_per_hour, card_gb, os_gb))
    table = Table(title=f"{resolved.unit.unit_id} on {day} ({resolved.schedule.mode} schedule)")
    table.add_column("item")
    table.add_column("value", justify="right")
    rows = [
        ("listening", f"{result.on_hours:.2f} h/day"),
        ("windows", f"{result.windows_per_day} /day"),
        ("accelerator busy while listening", _number(None if result.busy_while_on is None
                                                      else result.busy_while_on * 100, ".1f", " %")),
        ("accelerator busy over the day", _number(None if result.busy_per_day is None
                                                   else result.busy_per_day * 100, ".1f", " %")),
        ("detections (assumed)", f"{result.detections_per_day:.0f} /day"),
        ("clips", f"{result.clips_per_day:.0f} /day"),
        ("logs", f"{result.log_mb_per_day:.2f} MB/day"),
        ("clips", f"{result.clips_mb_per_day:.1f} MB/day"),
        ("embeddings", f"{result.embeddings_mb_per_day:.1f} MB/day ({resolved.storage.embeddings})"),
        ("clips stop after", _number(result.days_until_clips_stop, ".0f", " days")),
        ("card full after", _number(result.days_until_full, ".0f", " days")),
        ("energy", _number(result.wh_per_day, ".1f", " Wh/day")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    stdout.print(table)
    if result.busy_while_on is not None and result.busy_while_on >= 1:
        stderr.print("[bold red]warning:[/] inference is slower than real time at this hop: raise analysis.hop_s "
                     "or use a faster precision")


MIC_CHECK_S = 3.0
"""Seconds recorded by `check` to measure the microphone's rate and level."""
STATUS_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


@report_errors
def check(config: ConfigOpt = None, profile: ProfileOpt = None, set_: SetOpt = None,
          old_profile: OldProfileOpt = None) -> None:
    """Check the unit on site: bundle, model, microphone, free space, clock, temperature; exit 1 on FAIL."""
    from edge.audio.mic import record

    resolved = _load(config, renamed(profile, old_profile, "--unit", "--profile"), set_)
    audio = resolved.audio

    def capture() -> tuple[int, np.ndarray]:
        return record(audio.device or None, MIC_CHECK_S, audio.sample_rate, audio.channels)

    rows = run_checks(resolved, capture=capture)
    table = Table(title=f"check {resolved.unit.unit_id}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for row in rows:
        table.add_row(row.name, f"[{STATUS_STYLE[row.status]}]{row.status.value}[/]", row.detail)
    stdout.print(table)
    if any(row.status is Status.FAIL for row in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main ``biolingual-edge`` app."""
    app.add_typer(config_app, name="config")
    app.add_typer(service_app, name="service")
    app.command("plan")(plan)
    app.command("check")(check)
