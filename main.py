"""Synthesize every environment in config/ (plus the bootstrap stack) into cdktf.out/.

    python main.py                       # what cdktf.json runs; all environments
    python main.py --environment staging # only the named ones (and a bootstrap stack for them)

Configuration is validated before the CDK is even loaded: a mistake is reported as one line
per problem and exit status 2, and the previous cdktf.out/ is left as it was. Output is
written to a temporary directory and swapped into place only when synthesis succeeded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from core.settings import CONFIG_DIR, ConfigError, load_environments, scan_config_dir

EXIT_CONFIG_ERROR = 2
# What `terraform init/apply` leaves in a stack's folder: provider cache, lock file and, for
# the bootstrap stack, its local state. A new synthesis carries them over instead of deleting.
TERRAFORM_WORKING_FILES = (".terraform", ".terraform.lock.hcl", "terraform.tfstate",
                           "terraform.tfstate.backup")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environment", action="append", metavar="NAME",
                        help="synthesize only this environment (repeatable); default: all")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR,
                        help="folder of <environment>.yaml files (default: config/)")
    parser.add_argument("--outdir", type=Path,
                        default=Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")),
                        help="output folder (default: $CDKTF_OUTDIR or cdktf.out)")
    return parser.parse_args(argv)


def synthesize(environments, outdir: Path) -> None:
    """Synthesize into a sibling temporary folder, then swap it in for ``outdir``."""
    from stacks import build_app  # the CDK loads only once the configuration is known good

    outdir = outdir.resolve()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        # mkdtemp makes the folder private (0700); the output is no secret and is read by
        # other users and tools (CI caches, terraform run under another account).
        staging.chmod(0o777 & ~_umask())
        build_app(environments, str(staging)).synth()
        _carry_over_terraform_files(outdir, staging)
        previous = outdir.with_name(f".{outdir.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if outdir.exists():
            outdir.rename(previous)
        staging.rename(outdir)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _carry_over_terraform_files(previous: Path, new: Path) -> None:
    for stack in (previous / "stacks").glob("*"):
        target = new / "stacks" / stack.name
        if not target.is_dir():
            continue
        for name in TERRAFORM_WORKING_FILES:
            if (stack / name).exists():
                (stack / name).rename(target / name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        environments = _load_configuration(args)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        synthesize(environments, args.outdir)
    except OSError as error:
        print(f"error: --outdir {args.outdir}: cannot write the output ({error.strerror}: "
              f"{error.filename}); choose a writable folder", file=sys.stderr)
        return 1
    stacks = ", ".join(["bootstrap", *(env.environment for env in environments)])
    print(f"synthesized {stacks} into {args.outdir}/stacks/")
    return 0


def _load_configuration(args: argparse.Namespace) -> list:
    """The environments to synthesize, validated; every file of the folder that cannot be
    one is an error too, reported with them.

    A file such as ``staging.yml`` is reported even with ``--environment``: skipping it would
    leave its environment out of the bootstrap stack's roles without a word.
    """
    folder = args.config_dir
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "no such folder"
        raise ConfigError([f"--config-dir {folder}: {problem}; name the folder of "
                           "<environment>.yaml files (default: config/)"])
    names, problems = scan_config_dir(folder)
    names = list(dict.fromkeys(args.environment or names))  # a name given twice is one stack
    if not (names or problems):
        raise ConfigError([f"{folder}: no <environment>.yaml files; add one "
                           "(see config/production.yaml)"])
    try:
        environments = load_environments(names, folder)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems)
    return environments


if __name__ == "__main__":
    sys.exit(main())
