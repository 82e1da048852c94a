"""`systemctl` for the local worker hosts, which have no systemd: the unit files that
deploy/bootstrap.sh writes are run from their own [Service] lines, not from a second copy of the logic.

    systemctl daemon-reload                  nothing to reload (units are read when they run)
    systemctl enable [--now] UNIT...         link each unit into its [Install] WantedBy= targets, as
                                             systemd does; --now also starts it
    systemctl start UNIT...                  run a service's ExecStartPre= and ExecStart= commands
                                             (Type=oneshot, the only kind the bootstrap writes), again
                                             after RestartSec= while Restart=on-failure and it fails

At every later boot, the host's init (sumpipe/local/boot.py) starts what multi-user.target wants.
Timers are linked but not run (the stop_ec2 watchdog stops idle local instances); a `shutdown -h`
on a local host is its own (sumpipe/local/boot.py), never the machine's.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
BOOT_TARGETS = ("multi-user.target",)
# systemd's default start limit: at most 5 starts in 10 s, then the unit fails for good.
MAX_STARTS = 5


class UnitError(RuntimeError):
    pass


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat: ExecStartPre=, WantedBy=)."""
    if not path.is_file():
        raise UnitError(f"Unit {path.name} not found.")
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _run_commands(unit: str, lines: list[str]) -> int:
    for line in lines:
        # "-" before a command: its failure doesn't fail the unit.
        ignore_failure = line.startswith("-")
        argv = shlex.split(line.lstrip("-@+!"))
        code = subprocess.run(argv, check=False).returncode
        if code != 0 and not ignore_failure:
            print(f"{unit}: {argv[0]} exited with {code}", file=sys.stderr)
            return code
    return 0


def start(unit: str) -> int:
    """Run a service (its exit status); a timer is left alone (see the module's docstring)."""
    if unit.endswith(".timer"):
        print(f"{unit}: timers do not run on local hosts", file=sys.stderr)
        return 0
    service = parse_unit(UNIT_DIR / unit).get("Service", {})
    restart = service.get("Restart", ["no"])[-1] == "on-failure"
    delay_s = float(service.get("RestartSec", ["0.1"])[-1].rstrip("s"))
    for attempt in range(1, MAX_STARTS + 1):
        code = _run_commands(unit, service.get("ExecStartPre", []) + service.get("ExecStart", []))
        if code == 0 or not restart or attempt == MAX_STARTS:
            return code
        time.sleep(delay_s)
    return code


def enable(unit: str) -> None:
    for target in parse_unit(UNIT_DIR / unit).get("Install", {}).get("WantedBy", []):
        wants = UNIT_DIR / f"{target}.wants"
        wants.mkdir(exist_ok=True)
        link = wants / unit
        if not link.is_symlink():
            link.symlink_to(UNIT_DIR / unit)


def _start_all(units: list[str]) -> int:
    """Start each unit (all of them, whatever fails); the first failing status, else 0."""
    codes = [start(unit) for unit in units]
    return next((code for code in codes if code), 0)


def start_wanted(target: str) -> int:
    """Start what `target` wants, in name order."""
    wants = UNIT_DIR / f"{target}.wants"
    return _start_all(sorted(link.name for link in wants.iterdir()) if wants.is_dir() else [])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: systemctl daemon-reload | enable [--now] UNIT... | start UNIT...", file=sys.stderr)
        return 2
    verb, rest = args[0], args[1:]
    now = "--now" in rest
    units = [arg for arg in rest if not arg.startswith("-")]
    try:
        if verb == "daemon-reload":
            return 0
        if verb == "enable":
            for unit in units:
                enable(unit)
            return _start_all(units) if now else 0
        if verb == "start":
            return _start_all(units)
    except UnitError as error:
        print(f"systemctl: {error}", file=sys.stderr)
        return 5
    print(f"systemctl: {verb!r} is not something the local hosts' shim does", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
