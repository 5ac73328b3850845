#!/usr/bin/env python3
"""Turn a Terraform plan into the Markdown that reviewers and operators read.

The input is the output of ``terraform show -json tfplan`` (and, optionally, the text of
``terraform show -no-color tfplan``). Three commands share one renderer:

``render``
    print the Markdown of a stack's plan (useful locally).
``comment``
    create or update the one pull-request comment of a stack, found by a hidden marker;
    ``--plan-failed`` replaces it with a notice that the plan could not be computed.
``summary``
    append the Markdown to ``$GITHUB_STEP_SUMMARY``; ``--detect-drift`` exits 1 when the
    real infrastructure no longer matches the code, ``--refuse-data-loss`` exits 1 when the
    plan would destroy or replace DB-01, NFS-01 or the NFS data volume.

The Markdown puts the counts first, then every destroy or replacement of a stateful host
(in bold), then notices (user data that changed but is not re-applied to a running host),
then the resource list and the plan text, folded. It never exceeds GitHub's limits
(65,536 characters for a comment) and says so when it had to cut.

Exit status: 0 success, 1 drift found / data loss refused / GitHub API failure,
2 bad input (missing file, invalid JSON, not a plan, bad arguments).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import github_comments

# GitHub rejects comment bodies over 65,536 characters. Sizes are measured in UTF-8 bytes,
# which are never fewer than characters, so staying under the limit in bytes is always safe.
COMMENT_LIMIT = 65_536
# A job summary may hold 1 MiB per step; keep clear of it.
STEP_SUMMARY_LIMIT = 1_000_000

# A single enormous line (a policy document on one line) must not starve the rest.
MAX_LINE_CHARS = 4_000
# Lists that are always shown in full are capped so that they cannot crowd out the counts.
MAX_LISTED_ITEMS = 50

DEFAULT_COMMENT_AUTHOR = "github-actions[bot]"

# Role tag values of the hosts whose disks hold data that a re-created host would not have.
STATEFUL_HOST_ROLES = {
    "db": ("DB-01", "the PostgreSQL database on its disk is lost"),
    "nfs": ("NFS-01", "the NFS server holding the daily backups goes away"),
}
NFS_ROLE = "nfs"
USER_DATA_TAG = "UserDataSha256"

CHANGE_KINDS = ("create", "update", "replace", "destroy")
KIND_LABELS = {
    "create": "create",
    "update": "update in place",
    "replace": "replace",
    "destroy": "destroy",
    "forget": "forget (removed from state, not destroyed)",
    "import": "import",
    "move": "move",
}
KIND_SYMBOLS = {
    "create": "➕", "update": "🔄", "replace": "♻️", "destroy": "🗑️",
    "forget": "👋", "import": "📥", "move": "🚚",
}
REASONS = {
    "replace_because_cannot_update": "a changed argument cannot be updated in place",
    "replace_because_tainted": "the object is tainted",
    "replace_by_request": "replacement was requested (-replace)",
    "replace_by_triggers": "replace_triggered_by fired",
    "delete_because_no_resource_config": "it is no longer in the configuration",
    "delete_because_wrong_repetition": "its count/for_each changed form",
    "delete_because_count_index": "its count index is out of range",
    "delete_because_each_key": "its for_each key is gone",
    "delete_because_no_module": "its module is gone",
    "delete_because_no_move_target": "its moved target does not exist",
}
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PlanInputError(Exception):
    """The input is not something this tool can read; the message is shown as is."""


@dataclass(frozen=True)
class ResourceChange:
    """One managed resource instance in the plan, reduced to what the Markdown needs."""

    address: str
    type: str
    kinds: tuple[str, ...]
    actions: tuple[str, ...]
    reason: str | None
    replace_paths: tuple[str, ...]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    after_unknown: Mapping[str, Any] = field(default_factory=dict)
    deposed: str | None = None
    previous_address: str | None = None
    import_id: str | None = None

    @property
    def destroys(self) -> bool:
        return "delete" in self.actions

    def tags(self, side: str) -> dict[str, Any]:
        values = self.before if side == "before" else self.after
        return _tags_of(values)

    def tag(self, key: str) -> Any:
        """The tag as it is after the change, or as it was when the object goes away."""
        for side in ("after", "before"):
            tags = self.tags(side)
            if key in tags:
                return tags[key]
        return None

    @property
    def role(self) -> str | None:
        role = self.tag("Role")
        return role.lower() if isinstance(role, str) else None

    @property
    def display_name(self) -> str | None:
        name = self.tag("Name")
        return name if isinstance(name, str) and name else None

    def changed_attributes(self) -> list[str]:
        """Top-level arguments an in-place update changes (``tags.KEY`` for tags)."""
        before, after = self.before or {}, self.after or {}
        names = {key for key in set(before) | set(after)
                 if before.get(key) != after.get(key) or self.after_unknown.get(key) is True}
        names -= {"tags_all"} if "tags" in names else set()
        found = []
        for name in sorted(names):
            if name in ("tags", "tags_all"):
                old, new = self.tags("before"), self.tags("after")
                keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                found += [f"tags.{key}" for key in keys] or [name]
            else:
                found.append(name)
        return found


@dataclass(frozen=True)
class Danger:
    """A destroy or replacement that loses data or takes a stateful host away."""

    change: ResourceChange
    what: str
    consequence: str


@dataclass(frozen=True)
class Notice:
    """An in-place update of a host whose user data changed: it is not run again."""

    change: ResourceChange


@dataclass
class PlanSummary:
    """What a plan does, counted and classified."""

    terraform_version: str
    changes: list[ResourceChange]
    counts: Counter
    dangers: list[Danger]
    notices: list[Notice]
    output_changes: list[str]
    changed_outside: list[str]
    complete: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.output_changes)

    def terraform_totals(self) -> tuple[int, int, int]:
        """Terraform's own arithmetic: a replacement is one add and one destroy."""
        counts = self.counts
        return (counts["create"] + counts["replace"], counts["update"],
                counts["destroy"] + counts["replace"])

    def headline(self) -> str:
        if not self.has_changes:
            return "No changes. The infrastructure matches the configuration."
        add, change, destroy = self.terraform_totals()
        text = f"Plan: {add} to add, {change} to change, {destroy} to destroy."
        extras = [f"{self.counts[kind]} to {kind}" for kind in ("import", "forget", "move")
                  if self.counts[kind]]
        if extras:
            text += " Also " + ", ".join(extras) + "."
        if not self.changes:
            text += " Only outputs change."
        return text


# --------------------------------------------------------------------------- reading a plan


def load_plan(path: Path) -> dict[str, Any]:
    """Read and sanity-check a ``terraform show -json`` plan document."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInputError(f"plan file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlanInputError(f"cannot read plan file {path}: {error}") from None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise PlanInputError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg});"
            " expected the output of `terraform show -json tfplan`") from None
    validate_plan_document(document, str(path))
    return document


def validate_plan_document(document: Any, origin: str = "plan") -> None:
    if not isinstance(document, dict):
        raise PlanInputError(f"{origin} is not a Terraform plan: the top level is not an object")
    version = document.get("format_version")
    if not isinstance(version, str):
        raise PlanInputError(f"{origin} is not a Terraform plan: it has no format_version")
    if version.split(".")[0] != "1":
        raise PlanInputError(
            f"{origin} has plan format_version {version}; this tool reads format 1.x")
    if "planned_values" not in document:
        # A state document (terraform show -json without a plan) has "values" instead.
        raise PlanInputError(
            f"{origin} is not a Terraform plan (no planned_values); did you pass a state file?")
    for key in ("resource_changes", "resource_drift"):
        if not isinstance(document.get(key, []), list):
            raise PlanInputError(f"{origin} is not a Terraform plan: {key} is not a list")
    for index, entry in enumerate(document.get("resource_changes", [])):
        change = entry.get("change") if isinstance(entry, dict) else None
        if not isinstance(change, dict) or not isinstance(change.get("actions"), list):
            raise PlanInputError(
                f"{origin} is not a Terraform plan: resource_changes[{index}] has no actions")


def _tags_of(values: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        return {}
    merged: dict[str, Any] = {}
    # tags_all carries provider default tags; tags (what the code sets) wins on conflict.
    for key in ("tags_all", "tags"):
        tags = values.get(key)
        if isinstance(tags, Mapping):
            merged.update(tags)
    return merged


def classify(actions: Sequence[str], previous_address: str | None = None,
             importing: bool = False) -> tuple[str, ...]:
    """Map Terraform's action list to the kinds counted in the summary."""
    action_set = set(actions)
    kinds: list[str] = []
    if {"delete", "create"} <= action_set:
        kinds.append("replace")
    elif action_set == {"delete"}:
        kinds.append("destroy")
    elif "create" in action_set:
        kinds.append("create")
    elif action_set == {"update"}:
        kinds.append("update")
    if "forget" in action_set:
        kinds.append("forget")
    if importing:
        kinds.append("import")
    if previous_address:
        kinds.append("move")
    unknown = action_set - {"create", "delete", "update", "forget", "read", "no-op"}
    if unknown:
        # A future Terraform action: show it rather than silently treating it as no change.
        kinds.append("+".join(sorted(unknown)))
    return tuple(kinds)


def _resource_address(address: str) -> str:
    """``aws_instance.app["2"]`` -> ``aws_instance.app`` (configuration addresses)."""
    return re.sub(r"\[[^\]]*\]$", "", address)


def summarize(document: Mapping[str, Any]) -> PlanSummary:
    """Count, classify and look for danger in a validated plan document."""
    all_changes: list[ResourceChange] = []
    changes: list[ResourceChange] = []
    counts: Counter = Counter()
    for entry in document.get("resource_changes", []):
        if entry.get("mode", "managed") != "managed":
            continue  # data sources are read, never changed; Terraform does not count them
        change = entry["change"]
        kinds = classify(change["actions"], entry.get("previous_address"),
                         bool(change.get("importing")))
        importing = change.get("importing") if isinstance(change.get("importing"), dict) else {}
        resource = ResourceChange(
            address=str(entry.get("address", "?")),
            type=str(entry.get("type", "")),
            kinds=kinds,
            actions=tuple(change["actions"]),
            reason=entry.get("action_reason"),
            replace_paths=tuple(_format_path(path) for path in change.get("replace_paths") or []),
            before=change.get("before") if isinstance(change.get("before"), dict) else None,
            after=change.get("after") if isinstance(change.get("after"), dict) else None,
            after_unknown=(change.get("after_unknown")
                           if isinstance(change.get("after_unknown"), dict) else {}),
            deposed=entry.get("deposed"),
            previous_address=entry.get("previous_address"),
            import_id=importing.get("id"),
        )
        all_changes.append(resource)
        if kinds:
            changes.append(resource)
            counts.update(kinds)

    outputs = sorted(name for name, change in (document.get("output_changes") or {}).items()
                     if isinstance(change, dict) and set(change.get("actions", [])) - {"no-op"})
    outside = [str(entry.get("address", "?")) for entry in document.get("resource_drift", [])
               if isinstance(entry, dict) and entry.get("mode", "managed") == "managed"]
    return PlanSummary(
        terraform_version=str(document.get("terraform_version", "unknown")),
        changes=changes,
        counts=counts,
        dangers=find_dangers(all_changes, document),
        notices=find_notices(changes),
        output_changes=outputs,
        changed_outside=outside,
        complete=document.get("complete", True) is not False,
    )


def _format_path(path: Any) -> str:
    if isinstance(path, list):
        return ".".join(str(step) for step in path)
    return str(path)


def _nfs_volume_references(document: Mapping[str, Any],
                           guarded_volumes: set[str]) -> set[str]:
    """Configuration addresses of volume attachments whose volume_id refers to a guarded volume.

    cdktf writes ``"volume_id": "${aws_ebs_volume.x.id}"``; Terraform lists that reference in
    the plan's configuration, which identifies the attachment even before any ID is known.
    """
    guarded_config = {_resource_address(address) for address in guarded_volumes}
    resources = ((document.get("configuration") or {}).get("root_module") or {}).get("resources")
    found: set[str] = set()
    for resource in resources or []:
        if not isinstance(resource, dict) or resource.get("type") != "aws_volume_attachment":
            continue
        expression = (resource.get("expressions") or {}).get("volume_id") or {}
        references = expression.get("references") or []
        if any(_resource_address(str(ref).removesuffix(".id")) in guarded_config
               for ref in references):
            found.add(str(resource.get("address")))
    return found


def find_dangers(changes: Iterable[ResourceChange],
                 document: Mapping[str, Any]) -> list[Danger]:
    """Destroys and replacements of DB-01, NFS-01, the NFS volume and its attachment.

    Resources are recognised by type and ``Role`` tag, never by address: cdktf addresses end
    in hash suffixes that change when a construct moves.
    """
    changes = list(changes)
    nfs_volumes = [c for c in changes if c.type == "aws_ebs_volume" and c.role == NFS_ROLE]
    nfs_volume_ids = {values.get("id") for c in nfs_volumes
                      for values in (c.before, c.after) if values and values.get("id")}
    guarded_instance_ids = {values.get("id") for c in changes
                            if c.type == "aws_instance" and c.role == NFS_ROLE
                            for values in (c.before, c.after) if values and values.get("id")}
    attachment_configs = _nfs_volume_references(document, {c.address for c in nfs_volumes})

    dangers: list[Danger] = []
    for change in changes:
        if not change.destroys:
            continue
        if change.type == "aws_instance" and change.role in STATEFUL_HOST_ROLES:
            host, consequence = STATEFUL_HOST_ROLES[change.role]
            dangers.append(Danger(change, host, consequence))
        elif change.type == "aws_ebs_volume" and change.role == NFS_ROLE:
            dangers.append(Danger(change, "the NFS data volume",
                                  "the daily backups stored on it are lost"))
        elif change.type == "aws_volume_attachment":
            attached = [values for values in (change.before, change.after) if values]
            if (any(v.get("volume_id") in nfs_volume_ids for v in attached)
                    or any(v.get("instance_id") in guarded_instance_ids for v in attached)
                    or _resource_address(change.address) in attachment_configs):
                dangers.append(Danger(
                    change, "the attachment of the NFS data volume",
                    "the backup volume is detached from NFS-01 while it may be in use"))
    return dangers


def find_notices(changes: Iterable[ResourceChange]) -> list[Notice]:
    """In-place instance updates whose user data changed: EC2 does not run it again."""
    notices = []
    for change in changes:
        if change.type != "aws_instance" or "update" not in change.kinds:
            continue
        before = change.tags("before").get(USER_DATA_TAG)
        after = change.tags("after").get(USER_DATA_TAG)
        if before != after and after is not None:
            notices.append(Notice(change))
    return notices


# --------------------------------------------------------------------------- Markdown


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def inline_code(text: str) -> str:
    """Backtick-quote text that may itself contain backticks or table pipes."""
    text = text.replace("|", "\\|").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def code_fence_for(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"^\s*(`{3,}|~{3,})", text, re.M)), default=0)
    return "`" * max(3, longest + 1)


def _describe(change: ResourceChange, known_as: str | None = None) -> str:
    """Name tag and address; the name is left out when ``known_as`` already says it."""
    name = change.display_name
    label = inline_code(change.address)
    if change.deposed:
        label += f" (deposed object {inline_code(change.deposed)})"
    return f"{inline_code(name)} {label}" if name and not (known_as and known_as in name) \
        else label


def _action_phrase(change: ResourceChange) -> str:
    if "replace" in change.kinds:
        order = ("created anew, then the old one destroyed"
                 if change.actions[0] == "create" else "destroyed, then created anew")
        phrase = f"will be REPLACED ({order})"
        if change.replace_paths:
            phrase += ", forced by " + ", ".join(inline_code(p) for p in change.replace_paths)
        return phrase
    return "will be DESTROYED"


def _reason(change: ResourceChange) -> str:
    parts = []
    if change.replace_paths:
        parts.append("forced by " + ", ".join(inline_code(p) for p in change.replace_paths))
    elif change.reason in REASONS:
        parts.append(REASONS[change.reason])
    if "update" in change.kinds:
        changed = change.changed_attributes()
        if changed:
            shown = ", ".join(inline_code(name) for name in changed[:6])
            parts.append(shown + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    if change.import_id:
        parts.append(f"imports {inline_code(str(change.import_id))}")
    if change.previous_address:
        parts.append(f"moved from {inline_code(change.previous_address)}")
    return "; ".join(parts)


def _capped(items: Sequence[str], what: str, cap: int) -> list[str]:
    if len(items) <= cap:
        return list(items)
    hidden = len(items) - cap
    return list(items[:cap]) + [f"- … and {hidden} more {what} (see the plan)"]


@dataclass(frozen=True)
class Context:
    """Where the plan came from, for the footer."""

    commit: str | None = None
    run_url: str | None = None
    artifact: str | None = None


def _counts_table(summary: PlanSummary) -> list[str]:
    kinds = list(CHANGE_KINDS) + [k for k in ("import", "forget", "move") if summary.counts[k]]
    header = "| " + " | ".join(f"{KIND_SYMBOLS[k]} {k}" for k in kinds) + " |"
    rule = "|" + "---:|" * len(kinds)
    values = "| " + " | ".join(str(summary.counts[k]) for k in kinds) + " |"
    return [header, rule, values]


def _mandatory_sections(summary: PlanSummary, cap: int) -> list[str]:
    """Counts, dangers, notices and outputs: shown whatever the size, lists capped at ``cap``."""
    lines = [f"**{summary.headline()}**", ""]
    if summary.changes:
        lines += _counts_table(summary)
        if summary.counts["replace"]:
            lines += ["", "<sub>Terraform's own summary counts each replacement as one add and"
                      " one destroy.</sub>"]
        lines.append("")
    if summary.dangers:
        items = [f"- **{danger.what[0].upper()}{danger.what[1:]}"
                 f" {_describe(danger.change, danger.what)} {_action_phrase(danger.change)}"
                 f" — {danger.consequence}.**" for danger in summary.dangers]
        lines += ["> [!CAUTION]",
                  "> **This plan destroys or replaces stateful resources. Take a backup and"
                  " check the restore before applying.**"]
        lines += [f"> {item}" for item in _capped(items, "resources", cap)]
        lines.append("")
    if summary.notices:
        items = [f"- {_describe(notice.change)}" for notice in summary.notices]
        lines += ["> [!NOTE]",
                  "> **User data changed, but EC2 runs user data only at first boot:** these"
                  " hosts keep their current set-up until they are replaced or re-provisioned.",
                  ">"]
        lines += [f"> {item}" for item in _capped(items, "hosts", cap)]
        lines.append("")
    if summary.output_changes:
        names = ", ".join(inline_code(n) for n in summary.output_changes[:cap]) or "…"
        more = len(summary.output_changes) - cap
        lines += [f"Outputs that change: {names}" + (f" and {more} more." if more > 0 else "."),
                  ""]
    if summary.changed_outside:
        shown = ", ".join(inline_code(a) for a in summary.changed_outside[:min(cap, 10)]) or "…"
        more = len(summary.changed_outside) - min(cap, 10)
        lines += [f"Changed outside Terraform since the last apply: {shown}"
                  + (f" and {more} more." if more > 0 else "."), ""]
    if not summary.complete:
        lines += ["> [!WARNING]", "> The plan is incomplete: some changes are deferred until"
                  " values known only after apply exist. Plan again after applying.", ""]
    return lines


def _resource_rows(summary: PlanSummary) -> list[str]:
    rows = []
    for change in summary.changes:
        kinds = ", ".join(f"{KIND_SYMBOLS.get(k, '❔')} {KIND_LABELS.get(k, k)}"
                          for k in change.kinds)
        rows.append(f"| {kinds} | {_describe(change)} | {_reason(change)} |")
    return rows


def clean_plan_text(text: str) -> list[str]:
    text = ANSI_ESCAPE.sub("", text).rstrip("\n")
    lines = text.split("\n") if text else []
    return [line if len(line) <= MAX_LINE_CHARS
            else line[:MAX_LINE_CHARS] + " … (line cut: too long)" for line in lines]


def render_markdown(summary: PlanSummary, plan_text: str | None, *, title: str,
                    marker: str | None = None, context: Context = Context(),
                    limit: int = COMMENT_LIMIT, status: str | None = None) -> str:
    """Assemble the Markdown, fitting the resource list and plan text into ``limit`` bytes."""
    text_lines = clean_plan_text(plan_text) if plan_text is not None else None
    rows = _resource_rows(summary)

    def assemble(row_count: int, line_count: int, cap: int = MAX_LISTED_ITEMS) -> str:
        parts = [marker] if marker else []
        parts += [f"### {title}", ""]
        if status:
            parts += [status, ""]
        parts += _mandatory_sections(summary, cap)
        cut_rows = row_count < len(rows)
        cut_text = text_lines is not None and line_count < len(text_lines)
        if cut_rows or cut_text:
            where = (f"the workflow artifact {inline_code(context.artifact)}"
                     if context.artifact else "the workflow run")
            parts += ["> [!WARNING]",
                      f"> Truncated to stay under GitHub's limit of {limit:,} characters:"
                      + (f" the resource list shows {row_count} of {len(rows)} changes;"
                         if cut_rows else "")
                      + (f" the plan output shows the first {line_count} of"
                         f" {len(text_lines)} lines;" if cut_text else "")
                      + f" the full plan is in {where}.", ""]
        if rows:
            parts += [f"<details><summary>{len(summary.changes)} resource changes</summary>", "",
                      "| action | resource | why |", "|---|---|---|"]
            parts += rows[:row_count]
            if cut_rows:
                parts.append(f"| … | {len(rows) - row_count} more, not shown (truncated) | |")
            parts += ["", "</details>", ""]
        if text_lines is not None:
            body = "\n".join(text_lines[:line_count])
            fence = code_fence_for(body)
            parts += ["<details><summary>Plan output (terraform show)</summary>", "",
                      f"{fence}text", body]
            if cut_text:
                parts.append(f"… truncated: {len(text_lines) - line_count} more lines not shown")
            parts += [fence, "", "</details>", ""]
        else:
            parts += ["_The plan text was not provided._", ""]
        parts.append(_footer(summary, context))
        return "\n".join(parts) + "\n"

    line_total = len(text_lines) if text_lines is not None else 0
    document = assemble(len(rows), line_total)
    if _size(document) <= limit:
        return document

    # Too long. With GitHub's limits the capped lists always fit; a smaller limit shortens them.
    cap = MAX_LISTED_ITEMS
    while _size(assemble(0, 0, cap)) > limit:
        if cap == 0:
            raise PlanInputError(f"a limit of {limit} bytes cannot hold even the plan's counts")
        cap //= 4
    # The resource list may use at most half of what the mandatory parts leave, so that the
    # plan text, which carries the detail, keeps the other half.
    free = limit - _size(assemble(0, 0, cap))
    row_budget = free // 2 if line_total else free
    row_count, used = 0, 0
    for row in rows:
        used += _size(row) + 1
        if used > row_budget:
            break
        row_count += 1
    # The truncation notes grow by a digit or two as counts change: settle on a size that fits.
    while row_count and _size(assemble(row_count, 0, cap)) > limit:
        row_count -= 1
    low, high = 0, line_total
    while low < high:  # largest line count that fits
        middle = (low + high + 1) // 2
        if _size(assemble(row_count, middle, cap)) <= limit:
            low = middle
        else:
            high = middle - 1
    return assemble(row_count, low, cap)


def _footer(summary: PlanSummary, context: Context) -> str:
    bits = []
    if context.commit:
        bits.append(f"commit {inline_code(context.commit[:12])}")
    bits.append(f"Terraform {summary.terraform_version}")
    if context.run_url:
        bits.append(f"[workflow run]({context.run_url})")
    if context.artifact:
        bits.append(f"plan file in artifact {inline_code(context.artifact)}")
    return "<sub>" + " · ".join(bits) + "</sub>"


def comment_marker(stack: str) -> str:
    """The hidden first line that identifies a stack's comment on a pull request."""
    return f"<!-- terraform-plan-comment stack={stack} -->"


def render_failure(stack: str, context: Context) -> str:
    lines = [comment_marker(stack), f"### ❌ Terraform plan failed · {inline_code(stack)}", "",
             "The plan could not be computed for this push, so the previous plan that was shown"
             " here was removed: it no longer describes this pull request."]
    if context.run_url:
        lines += ["", f"The error is in the [workflow run]({context.run_url})."]
    if context.commit:
        lines += ["", f"<sub>commit {inline_code(context.commit[:12])}</sub>"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise PlanInputError(f"plan text file not found: {path}") from None
    except OSError as error:
        raise PlanInputError(f"cannot read plan text file {path}: {error}") from None


def context_from_environment(environ: Mapping[str, str], artifact: str | None) -> Context:
    """Commit and run link from the variables GitHub Actions sets (all optional)."""
    commit = environ.get("GITHUB_SHA")
    event_path = environ.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            event = json.loads(Path(event_path).read_text(encoding="utf-8"))
            # On pull_request events GITHUB_SHA is a merge commit; reviewers know the head.
            commit = event["pull_request"]["head"]["sha"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    run_url = None
    if environ.get("GITHUB_REPOSITORY") and environ.get("GITHUB_RUN_ID"):
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        run_url = f"{server}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ['GITHUB_RUN_ID']}"
        if environ.get("GITHUB_RUN_ATTEMPT", "1") != "1":
            run_url += f"/attempts/{environ['GITHUB_RUN_ATTEMPT']}"
    return Context(commit=commit, run_url=run_url, artifact=artifact)


def _stack_name(value: str) -> str:
    if not STACK_NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"invalid stack name {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plan_comment.py",
        description="Render a Terraform plan (terraform show -json) as Markdown for GitHub.")
    commands = parser.add_subparsers(dest="command", required=True)

    def plan_inputs(command: argparse.ArgumentParser, required: bool = True) -> None:
        command.add_argument("--stack", required=True, type=_stack_name,
                             help="stack name, e.g. staging")
        command.add_argument("--plan-json", type=Path, required=required,
                             help="output of `terraform show -json tfplan`")
        command.add_argument("--plan-text", type=Path,
                             help="output of `terraform show -no-color tfplan`")
        command.add_argument("--artifact", help="name of the artifact holding the plan file")

    render = commands.add_parser("render", help="print the Markdown")
    plan_inputs(render)
    render.add_argument("--limit", type=int, default=COMMENT_LIMIT,
                        help="maximum size in bytes (default: %(default)s)")

    comment = commands.add_parser("comment", help="create or update the PR comment of a stack")
    plan_inputs(comment, required=False)
    comment.add_argument("--plan-failed", action="store_true",
                         help="replace the comment with a notice that the plan failed")
    comment.add_argument("--pr-number", type=int,
                         help="pull request number (default: from $GITHUB_EVENT_PATH)")
    comment.add_argument("--author", default=os.environ.get("PLAN_COMMENT_AUTHOR",
                                                            DEFAULT_COMMENT_AUTHOR),
                         help="login that owns the comment (default: %(default)s)")

    summary = commands.add_parser("summary", help="append the Markdown to the job summary")
    plan_inputs(summary)
    summary.add_argument("--detect-drift", action="store_true",
                         help="exit 1 when the plan has any change (drift from the code)")
    summary.add_argument("--refuse-data-loss", action="store_true",
                         help="exit 1 when DB-01, NFS-01 or the NFS volume would be destroyed")
    summary.add_argument("--output", type=Path,
                         help="file to append to (default: $GITHUB_STEP_SUMMARY, else stdout)")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _annotate(level: str, message: str, environ: Mapping[str, str]) -> None:
    """Show a line in the log and, on GitHub Actions, as an annotation on the run."""
    if environ.get("GITHUB_ACTIONS") == "true":
        print(f"::{level}::{message}")
    else:
        _log(f"{level}: {message}")


def _command_render(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    summary = summarize(load_plan(args.plan_json))
    context = context_from_environment(environ, args.artifact)
    sys.stdout.write(render_markdown(
        summary, _read_text(args.plan_text), title=f"Terraform plan · {inline_code(args.stack)}",
        marker=comment_marker(args.stack), context=context, limit=args.limit))
    return 0


def _command_comment(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    context = context_from_environment(environ, args.artifact)
    if args.plan_failed:
        body = render_failure(args.stack, context)
    elif args.plan_json is None:
        raise PlanInputError("comment needs --plan-json, or --plan-failed")
    else:
        summary = summarize(load_plan(args.plan_json))
        body = render_markdown(
            summary, _read_text(args.plan_text),
            title=f"Terraform plan · {inline_code(args.stack)}",
            marker=comment_marker(args.stack), context=context, limit=COMMENT_LIMIT)
    try:
        client = github_comments.GitHubClient.from_environment(environ)
        number = args.pr_number or github_comments.pull_request_number(environ)
    except github_comments.GitHubConfigError as error:
        raise PlanInputError(str(error)) from None
    action, comment = github_comments.upsert_marked_comment(
        client, number, comment_marker(args.stack), body, author=args.author)
    _log(f"{action} plan comment for {args.stack} on pull request #{number}: "
         f"{comment.get('html_url', comment.get('id'))}")
    return 0


def _command_summary(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    summary = summarize(load_plan(args.plan_json))
    context = context_from_environment(environ, args.artifact)
    status = None
    drifted = args.detect_drift and summary.has_changes
    refused = args.refuse_data_loss and bool(summary.dangers)
    if args.detect_drift:
        status = (f"❌ **Drift: `{args.stack}` no longer matches the code on this branch.**"
                  " Apply from the deploy workflow, or change the code to match."
                  if drifted else f"✅ No drift: `{args.stack}` matches the code.")
    if refused:
        status = ((status + "\n\n") if status else "") + (
            "⛔ **Not applied: this plan destroys or replaces stateful resources.** If that is"
            " intended, take a backup, then run the deploy workflow by hand with"
            " `allow_data_loss` ticked.")
    title = (f"Drift check · {inline_code(args.stack)}" if args.detect_drift
             else f"Terraform plan · {inline_code(args.stack)}")
    markdown = render_markdown(summary, _read_text(args.plan_text), title=title,
                               context=context, limit=STEP_SUMMARY_LIMIT, status=status)
    target = args.output or (Path(environ["GITHUB_STEP_SUMMARY"])
                             if environ.get("GITHUB_STEP_SUMMARY") else None)
    if target is None:
        sys.stdout.write(markdown)
    else:
        try:
            with target.open("a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        except OSError as error:
            raise PlanInputError(f"cannot write the summary to {target}: {error}") from None
    print(f"{args.stack}: {summary.headline()}")
    if drifted:
        _annotate("error", f"Drift in {args.stack}: {summary.headline()}", environ)
    if refused:
        names = ", ".join(danger.what for danger in summary.dangers)
        _annotate("error", f"Refusing to apply {args.stack}: the plan destroys or replaces "
                  f"{names}. Re-run by hand with allow_data_loss to proceed.", environ)
    return 1 if drifted or refused else 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    handlers = {"render": _command_render, "comment": _command_comment,
                "summary": _command_summary}
    try:
        return handlers[args.command](args, environ)
    except PlanInputError as error:
        _log(f"plan_comment.py: error: {error}")
        return 2
    except github_comments.GitHubError as error:
        _log(f"plan_comment.py: error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
