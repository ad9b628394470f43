"""`fedfuse submit` and `fedfuse verify`: a results store as a bundle anyone can check."""

from __future__ import annotations

from pathlib import Path

from fedfuse.bench.cli.common import console
from fedfuse.plugins.config import ConfigError


def shipped_digest(name: str) -> str | None:
    """The digest of shipped suite ``name`` as it stands here (None: not a shipped suite)."""
    from fedfuse.bench.suites.parse import shipped_suites, study_digest

    path = shipped_suites().get(name)
    return study_digest(path.read_text()) if path else None


def cmd_submit(args) -> int:
    """Write the bundle; with --track, only a closed run of that shipped track or suite."""
    from fedfuse.bench.engine.submission import BundleError, submit
    from fedfuse.plugins.manager import registry

    out = Path(args.out)
    dest = Path(args.dest) if args.dest else out.with_name(out.name + "-bundle")
    try:
        manifest = submit(out, dest, registry())
    except BundleError as err:
        raise ConfigError(str(err)) from None
    if args.track and (manifest["suite"] != args.track or manifest["suite_digest"] != shipped_digest(args.track)):
        raise ConfigError(f"{out} is not a closed run of {args.track} (it ran {manifest['suite']}"
                          f"{'' if manifest['suite'] != args.track else ', modified'}); the bundle in {dest} is of that")
    console().print(f"bundle of {manifest['suite']} v{manifest['suite_version']} ({len(manifest['protocols'])} "
                    f"protocols) written to {dest}; check it anywhere with: fedfuse verify {dest}")
    return 0


def cmd_verify(args) -> int:
    """Check the bundle here, re-run its chosen cells, print the verdict; exit 0 only if verified."""
    from fedfuse.bench.engine.submission import BundleError, read_manifest, verify
    from fedfuse.plugins.manager import registry

    if args.cells < 0:
        raise ConfigError(f"--cells {args.cells}: give a count >= 0")
    try:
        manifest = read_manifest(Path(args.bundle))
        with console().status(f"verifying {args.bundle}: running {args.cells} of its cells again"):
            verdict = verify(Path(args.bundle), registry(), args.cells, shipped_digest(manifest["suite"]))
    except BundleError as err:
        raise ConfigError(str(err)) from None
    for line in verdict["reasons"]:
        print(f"differs: {line}")  # one line each, never wrapped
    status = "[green]verified[/green]" if verdict["ok"] else "[red]not verified[/red]"
    console().print(f"{status}: {manifest['suite']}, cells run again: {', '.join(verdict['cells']) or 'none'} "
                    f"(of {verdict['of']} ok); written to {Path(args.bundle) / 'verification.json'}")
    return 0 if verdict["ok"] else 1
