"""A small builder for cloud-config documents: files to write and boot steps to run once.

Files under ``provisioning/files/`` are embedded as they are, so the script a test runs is the
script a host runs; only the comment lines of scripts are left out (``host_text``), because EC2
takes 16 KB of user data and the comments are for the readers of this repository. Multi-line
text is emitted as YAML literal blocks, so the user data stays
readable (``python -m provisioning.user_data ENVIRONMENT HOST`` prints it).

Boot steps are not cloud-init's ``runcmd``, which runs as one ``sh`` script without ``set -e``
and ends in "success" whatever failed before its last line. Each step is a file in
cloud-init's per-instance scripts folder, run once and in order, that runs its command
through ``boot-step`` as the systemd unit ``boot-NAME.service``: a failure leaves that unit
failed, stops the steps after it, and makes ``cloud-init status --long`` report the step's
file by name. The last script, ``boot-step --complete``, marks the boot complete once every
step is done, also when an operator resumed a failed boot (cloud-init's status cannot say so).
"""
from __future__ import annotations

import functools
import io
import json
import re
import shlex
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import yaml

FILES_DIR = Path(__file__).resolve().parent / "files"
# Functions several host scripts share; they source it from PLATFORM_LIB (this path on hosts).
SHELL_LIBRARY = FILES_DIR / "lib" / "load-defaults.sh"
SHELL_LIBRARY_PATH = "/usr/local/lib/platform/load-defaults.sh"
# cloud-init runs these once per instance, in name order, and names those that fail.
BOOT_STEPS_DIR = "/var/lib/cloud/scripts/per-instance"
BOOT_STEP_PATH = "/usr/local/sbin/boot-step"
# The last per-instance script: ``boot-step --complete`` marks the boot complete.
BOOT_COMPLETE = "boot-complete"
_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def file_text(name: str) -> str:
    """The text of ``provisioning/files/NAME``, exactly as a host receives it."""
    return (FILES_DIR / name).read_text(encoding="utf-8")


# A here-document's lines are data, not shell: a script holding one is embedded whole.
_HEREDOC = re.compile(r"<<-?\s*['\"]?[A-Za-z_]")


@functools.lru_cache(maxsize=None)
def host_text(name: str) -> str:
    """``provisioning/files/NAME`` as a host receives it: a script without its comment lines.

    Kept once read: every host of every environment embeds the same scripts, and tokenizing
    them for each would add to every synthesis."""
    return without_comment_lines(file_text(name))


def without_comment_lines(text: str) -> str:
    """A script's text less its whole-line comments; any other text unchanged.

    Only comments go, never code: Python's are found by its tokenizer (a ``#`` line inside a
    string stays), and a shell script holding a here-document is kept whole. The shebang, a
    Python encoding line and ShellCheck directives stay.
    """
    if not text.startswith("#!"):
        return text
    lines = text.splitlines(keepends=True)
    if "python" in lines[0]:
        comments = {token.start[0] for token in tokenize.generate_tokens(io.StringIO(text).readline)
                    if token.type == tokenize.COMMENT and token.line.lstrip().startswith("#")}
    elif _HEREDOC.search(text):
        return text
    else:
        comments = {number for number, line in enumerate(lines, start=1)
                    if line.lstrip().startswith("#")
                    and not line.lstrip().startswith("# shellcheck")}
    kept = {1, 2} if len(lines) > 1 and "coding" in lines[1] else {1}
    return "".join(line for number, line in enumerate(lines, start=1)
                   if number in kept or number not in comments)


def template_text(name: str, **values) -> str:
    """``provisioning/files/NAME`` with its ``${placeholders}`` filled in; all are required."""
    return Template(file_text(name)).substitute(values)


def env_file(values: dict) -> str:
    """``KEY=value`` lines, as the host scripts' ``load_defaults`` and systemd read them."""
    lines = []
    for key, value in values.items():
        text = str(value)
        if any(c in text for c in "\n\"'\\ $`"):
            raise ValueError(f"{key}: {text!r} cannot be written unquoted in an env file")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BootStep:
    """One command of a host's first boot; its name names its unit and its script.

    attempts, retry_seconds: run again after a failure where waiting can help (something
    another host creates, a registry or archive that is briefly unreachable).
    """

    name: str
    command: list
    attempts: int = 1
    retry_seconds: int = 30

    def script(self) -> str:
        options = ([] if self.attempts == 1 else
                   ["--attempts", str(self.attempts), "--retry-seconds", str(self.retry_seconds)])
        return ("#!/bin/sh\n# A first-boot step of this host, run once by cloud-init "
                "(provisioning/cloud_config.py).\n"
                f"exec {shlex.join(['boot-step', self.name, *options, '--'])} "
                f"{' '.join(_quoted(word) for word in self.command)}\n")


def _quoted(word: str) -> str:
    # Every word single-quoted, whatever it holds: the script's text is then the same
    # whether a word is a Terraform reference (NFS-01's volume ID) or the value put there.
    return "'" + str(word).replace("'", "'\\''") + "'"


@dataclass
class CloudConfig:
    """One host's cloud-config: ``write_files`` in order, then the boot steps in order."""

    hostname: str
    files: list[dict] = field(default_factory=list)
    steps: list[BootStep] = field(default_factory=list)

    def add_file(self, path: str, content: str, permissions: str = "0644") -> None:
        if any(entry["path"] == path for entry in self.files):
            raise ValueError(f"{path} is written twice")
        self.files.append({"path": path, "owner": "root:root", "permissions": permissions,
                           "content": content})

    def add_script(self, path: str, name: str) -> None:
        """Install ``provisioning/files/NAME`` as an executable at ``path``, and the shared
        shell library it sources, once."""
        text = host_text(name)
        self.add_file(path, text, permissions="0755")
        if SHELL_LIBRARY.name in text and not any(
                entry["path"] == SHELL_LIBRARY_PATH for entry in self.files):
            self.add_file(SHELL_LIBRARY_PATH, host_text(f"lib/{SHELL_LIBRARY.name}"))

    def add_json(self, path: str, document: dict, permissions: str = "0644") -> None:
        self.add_file(path, json.dumps(document, indent=2) + "\n", permissions)

    def add_yaml(self, path: str, document: dict, permissions: str = "0644") -> None:
        self.add_file(path, dump_yaml(document), permissions)

    def step(self, name: str, command: list, attempts: int = 1,
             retry_seconds: int = 30) -> None:
        """Run ``command`` at first boot, after the steps added before it."""
        if (not _STEP_NAME.match(name) or name == BOOT_COMPLETE
                or any(s.name == name for s in self.steps)):
            raise ValueError(f"boot step name {name!r} is not a unique short name")
        self.steps.append(BootStep(name, list(command), attempts, retry_seconds))

    def render(self) -> str:
        if len(self.steps) > 98:
            raise ValueError("more than 98 boot steps")
        runner = {"path": BOOT_STEP_PATH, "owner": "root:root", "permissions": "0755",
                  "content": host_text("boot-step.sh")}
        steps = [{"path": f"{BOOT_STEPS_DIR}/{number:02d}-{step.name}", "owner": "root:root",
                  "permissions": "0755", "content": step.script()}
                 for number, step in enumerate(self.steps, start=1)]
        steps.append({"path": f"{BOOT_STEPS_DIR}/{len(self.steps) + 1:02d}-{BOOT_COMPLETE}",
                      "owner": "root:root", "permissions": "0755",
                      "content": "#!/bin/sh\nexec boot-step --complete\n"})
        document = {
            "hostname": self.hostname,
            "timezone": "Etc/UTC",
            # No SSH at all: hosts are reached through SSM Session Manager.
            "ssh_pwauth": False,
            "disable_root": True,
            "write_files": [*self.files, runner, *steps],
        }
        return "#cloud-config\n" + dump_yaml(document)


# libyaml's emitter when PyYAML has it (its wheels do): same text, ten times faster.
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _LiteralDumper(_SafeDumper):
    """Safe YAML with multi-line strings as ``|`` blocks and no line folding."""


def _represent_str(dumper: yaml.SafeDumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _represent_list(dumper: yaml.SafeDumper, items: list):
    # Commands and short lists read best on one line: [install-packages, docker.io].
    flat = all(isinstance(i, (str, int, float, bool)) and "\n" not in str(i) for i in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_LiteralDumper.add_representer(str, _represent_str)
_LiteralDumper.add_representer(list, _represent_list)


def dump_yaml(document) -> str:
    return yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=10_000,
                     allow_unicode=False, default_flow_style=False)
