"""The locks (requirements.txt, requirements-dev.txt: compiled by `make lock` from the .in
files) read as {package: version}, and the checks that hold a venv to them.

    python -m testkit.locks verify requirements-dev.txt      # pip freeze == the lock, or the diff
    python -m testkit.locks same requirements.txt OTHER       # the same pins (versions and markers), or the diff
    python -m testkit.locks moved requirements-dev.txt OTHER  # what another resolution changed
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# `name[extras]==version ; marker`, as uv writes a lock line (its hashes follow on their own lines).
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*$")
PROJECT = "slerp-arena"  # the package itself, installed editable beside the lock


def canonical(name: str) -> str:
    """PEP 503: the names pip freeze and uv write may differ in case, '_' and '.'."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    version: str
    marker: str | None  # None: for every environment
    hashes: int
    via: tuple[str, ...]  # the packages that require it ('-r requirements.in' for a direct one)


def read(path: str | Path) -> dict[str, Pin]:
    """Every pinned package of a lock. A line that is neither a pin, a hash, a comment nor
    blank is an error: the lock is meant to be complete."""
    pins: dict[str, Pin] = {}
    name = None
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if match := PIN.match(line):
            name = canonical(match[1])
            pins[name] = Pin(match[2], match[3], 0, ())
        elif stripped.startswith("--hash=") and name:
            pins[name] = Pin(pins[name].version, pins[name].marker, pins[name].hashes + 1, pins[name].via)
        elif name and (via := VIA.match(line)) and stripped != "# via":
            pins[name] = Pin(pins[name].version, pins[name].marker, pins[name].hashes, (*pins[name].via, canonical(via[1])))
        elif not stripped.startswith("#"):
            raise ValueError(f"{path}:{number}: not a pin, a hash or a comment: {stripped}")
    return pins


def frozen(python: str = sys.executable) -> dict[str, str]:
    """`pip freeze --all` of a venv, the package itself left out."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith(("-e ", "#")):
            name, version = line.split("==", 1)
            versions[canonical(name)] = version.strip()
    versions.pop(PROJECT, None)
    return versions


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per package that is missing, extra, or at another version."""
    lines = []
    for name in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(name), actual.get(name)
        if want != have:
            lines.append(f"{name}: lock {want or '(absent)'}, installed {have or '(absent)'}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "verify":
        lock = {name: pin.version for name, pin in read(argv[1]).items()}
        diff = differences(lock, frozen())
        if diff:
            print(f"pip freeze differs from {argv[1]}:", *diff, sep="\n  ", file=sys.stderr)
            return 1
        print(f"pip freeze equals {argv[1]}: {len(lock)} packages")
        return 0
    if len(argv) == 3 and argv[0] == "same":
        pins = [{name: f"{pin.version} ; {pin.marker}" if pin.marker else pin.version for name, pin in read(path).items()}
                for path in argv[1:]]
        diff = differences(*pins)
        if diff:
            print(f"{argv[1]} and {argv[2]} pin differently:", *[d.replace("installed", "again") for d in diff], sep="\n  ",
                  file=sys.stderr)
            return 1
        return 0
    if len(argv) == 3 and argv[0] == "moved":
        old = {name: pin.version for name, pin in read(argv[1]).items()}
        new = {name: pin.version for name, pin in read(argv[2]).items()}
        diff = differences(old, new)
        print(f"{len(diff)} of {len(old.keys() | new.keys())} packages move from {argv[1]} to the newest allowed:")
        for line in diff:
            print("  " + line.replace("installed", "newest"))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
