"""A small builder for cloud-config documents: files to write and commands to run once.

Files under ``provisioning/files/`` are embedded verbatim, so the script a test runs is the
script a host runs. Multi-line text is emitted as YAML literal blocks, so the user data stays
readable (``python -m provisioning.user_data ENVIRONMENT HOST`` prints it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Union

import yaml

FILES_DIR = Path(__file__).resolve().parent / "files"
# Functions several host scripts share; they source it from PLATFORM_LIB (this path on hosts).
SHELL_LIBRARY = FILES_DIR / "lib" / "load-defaults.sh"
SHELL_LIBRARY_PATH = "/usr/local/lib/platform/load-defaults.sh"

Command = Union[list, str]


def file_text(name: str) -> str:
    """The text of ``provisioning/files/NAME``, exactly as a host receives it."""
    return (FILES_DIR / name).read_text(encoding="utf-8")


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


@dataclass
class CloudConfig:
    """One host's cloud-config: ``write_files`` in order, then ``runcmd`` in order."""

    hostname: str
    files: list[dict] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def add_file(self, path: str, content: str, permissions: str = "0644") -> None:
        if any(entry["path"] == path for entry in self.files):
            raise ValueError(f"{path} is written twice")
        self.files.append({"path": path, "owner": "root:root", "permissions": permissions,
                           "content": content})

    def add_script(self, path: str, name: str) -> None:
        """Install ``provisioning/files/NAME`` as an executable at ``path``, and the shared
        shell library it sources, once."""
        text = file_text(name)
        self.add_file(path, text, permissions="0755")
        if SHELL_LIBRARY.name in text and not any(
                entry["path"] == SHELL_LIBRARY_PATH for entry in self.files):
            self.add_file(SHELL_LIBRARY_PATH, file_text(f"lib/{SHELL_LIBRARY.name}"))

    def add_json(self, path: str, document: dict, permissions: str = "0644") -> None:
        self.add_file(path, json.dumps(document, indent=2) + "\n", permissions)

    def add_yaml(self, path: str, document: dict, permissions: str = "0644") -> None:
        self.add_file(path, dump_yaml(document), permissions)

    def run(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def render(self) -> str:
        document = {
            "hostname": self.hostname,
            "timezone": "Etc/UTC",
            # No SSH at all: hosts are reached through SSM Session Manager.
            "ssh_pwauth": False,
            "disable_root": True,
            "write_files": self.files,
            "runcmd": self.commands,
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
