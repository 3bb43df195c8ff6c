"""The installed environment against launch/requirements.lock, and the post-install smoke check.

Runs with nothing but the standard library and pip (so set-up can ask it what to install before
anything is installed): marker evaluation uses `packaging` when present, else pip's vendored copy.

    python launch/envcheck.py status [--lock FILE]     exit 0 if every locked distribution is installed
                                                        at its locked version, else list the drift, exit 1
    python launch/envcheck.py split OUT_MAIN OUT_LATE   write the lock as two requirement files: the
                                                        distributions built without isolation
                                                        (deepspeed) go to OUT_LATE, the rest to OUT_MAIN
    python launch/envcheck.py smoke                     import the stack, call torchaudio's compiled
                                                        Griffin-Lim, print versions; a broken pair fails
                                                        with the versions and the fix
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import Marker
except ImportError:  # a fresh venv has only pip
    from pip._vendor.packaging.markers import Marker

LOCK = Path(__file__).resolve().parent / "requirements.lock"
# Distributions whose build needs the already-installed environment (DeepSpeed's setup.py imports
# torch): installed after the rest, without build isolation.
BUILT_LATE = ("deepspeed",)
FIX = "rm -rf .venv && bash launch/setup.sh   (reinstalls exactly launch/requirements.lock)"


@dataclass(frozen=True)
class LockEntry:
    name: str        # normalised distribution name
    version: str
    marker: str      # "" when the entry applies everywhere
    text: str        # the entry as written in the lock, hashes included

    def applies(self) -> bool:
        return not self.marker or Marker(self.marker).evaluate()


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> list[LockEntry]:
    """Entries of a `uv pip compile --generate-hashes` lock: `name==version [; marker] \\` + hash lines."""
    entries, block = [], []
    for line in path.read_text().splitlines() + [""]:
        if line.startswith((" ", "\t")) and block:
            if not line.strip().startswith("#"):
                block.append(line)
            continue
        if block:
            head = block[0].rstrip(" \\")
            spec, _, marker = head.partition(";")
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", spec.strip())
            if not match:
                raise ValueError(f"{path}: entry {head!r} is not pinned as name==version")
            entries.append(LockEntry(normalise(match[1]), match[2], marker.strip(), "\n".join(block)))
            block = []
        if line and not line.startswith("#"):
            block = [line]
    if not entries:
        raise ValueError(f"{path}: no entries (expected `name==version` lines from uv pip compile)")
    return entries


def applicable(path: Path = LOCK) -> list[LockEntry]:
    return [e for e in read_lock(path) if e.applies()]


def installed_versions() -> dict[str, str]:
    """name -> version of the distribution an import would find: the first on sys.path. Later copies
    are ignored (setuptools, once imported, e.g. by torch.compile's C++ builds, appends its _vendor
    folder with its own packaging and platformdirs to sys.path)."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        if dist.metadata["Name"]:
            versions.setdefault(normalise(dist.metadata["Name"]), dist.version)
    return versions


def drift(path: Path = LOCK) -> list[str]:
    """One line per locked distribution that is missing or at another version in this interpreter."""
    have = installed_versions()
    problems = []
    for entry in applicable(path):
        got = have.get(entry.name)
        if got is None:
            problems.append(f"{entry.name}: not installed (lock: {entry.version})")
        elif got.split("+")[0] != entry.version:
            problems.append(f"{entry.name}: installed {got}, lock {entry.version}")
    return problems


def split(path: Path, out_main: Path, out_late: Path) -> None:
    entries = applicable(path)
    out_main.write_text("\n".join(e.text for e in entries if e.name not in BUILT_LATE) + "\n")
    out_late.write_text("\n".join(e.text for e in entries if e.name in BUILT_LATE) + "\n")


def fail(message: str) -> None:
    print(f"setup: error: {message}\n  fix: {FIX}", file=sys.stderr)
    sys.exit(1)


def smoke() -> None:
    """Imports the stack and runs the compiled code paths a broken wheel pair breaks first."""
    torch_v, audio_v = (metadata.version(name).split("+")[0] for name in ("torch", "torchaudio"))
    if torch_v != audio_v:
        fail(f"torch {torch_v} and torchaudio {audio_v} are not a matching pair "
             "(torchaudio's compiled extension is built against one exact torch; the lock pins both to one version)")
    import torch
    try:
        import torchaudio
    except OSError as err:  # the compiled extension does not load against this torch
        fail(f"torchaudio {audio_v} cannot load against torch {torch_v}: {err}")
    try:
        spec_FT = torch.rand(513, 16)
        wave = torchaudio.transforms.GriffinLim(n_fft=1024, hop_length=256, power=1.0, n_iter=2)(spec_FT)
    except (OSError, RuntimeError) as err:
        fail(f"torchaudio {audio_v} with torch {torch_v}: Griffin-Lim failed: {err}")
    if wave.ndim != 1 or not bool(torch.isfinite(wave).all()):
        fail(f"torchaudio {audio_v} with torch {torch_v}: Griffin-Lim returned a non-finite or misshapen waveform")
    import accelerate
    import deepspeed
    import s3fs
    import webdataset
    import mars_dist  # noqa: F401  (the project itself imports)
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "torchaudio": torchaudio.__version__,
                "deepspeed": deepspeed.__version__, "accelerate": accelerate.__version__,
                "webdataset": metadata.version("webdataset"), "s3fs": s3fs.__version__}
    print("smoke check passed: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="envcheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status")
    status.add_argument("--lock", type=Path, default=LOCK)
    cut = sub.add_parser("split")
    cut.add_argument("--lock", type=Path, default=LOCK)
    cut.add_argument("out_main", type=Path)
    cut.add_argument("out_late", type=Path)
    sub.add_parser("smoke")
    args = parser.parse_args(argv)
    if args.command == "status":
        problems = drift(args.lock)
        for line in problems:
            print(line)
        sys.exit(1 if problems else 0)
    if args.command == "split":
        split(args.lock, args.out_main, args.out_late)
    else:
        smoke()


if __name__ == "__main__":
    main()
