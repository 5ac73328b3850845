"""The plan renderer: counts, danger call-outs, notices and truncation, on real-format plans."""
import copy
import re

import pytest
from pipeline_support import fixture_path, load_fixture

import plan_comment
from plan_comment import (COMMENT_LIMIT, Context, classify, comment_marker, inline_code,
                          render_failure, render_markdown, summarize)

AWS = "registry.terraform.io/hashicorp/aws"


def render(document, plan_text=None, **options):
    options.setdefault("title", "Terraform plan · `production`")
    options.setdefault("marker", comment_marker("production"))
    return render_markdown(summarize(document), plan_text, **options)


def instance_change(address, actions, *, role, name, before_tags=None, after_tags=None,
                    tag_field="tags"):
    """A resource_changes entry for an aws_instance, shaped like Terraform writes it."""
    base = {"Name": name, "Role": role, "Environment": "production"}
    before = None if actions == ["create"] else {
        "id": "i-0123456789abcdef0", "instance_type": "t3.small",
        tag_field: {**base, **(before_tags or {})}}
    after = None if actions == ["delete"] else {
        "instance_type": "t3.small", tag_field: {**base, **(after_tags or before_tags or {})}}
    return {"address": address, "mode": "managed", "type": "aws_instance",
            "name": address.split(".")[1], "provider_name": AWS,
            "change": {"actions": actions, "before": before, "after": after,
                       "after_unknown": {}, "before_sensitive": {}, "after_sensitive": {}}}


def plan_document(resource_changes, **extra):
    return {"format_version": "1.2", "terraform_version": "1.15.9",
            "planned_values": {"root_module": {}}, "resource_changes": resource_changes,
            "applyable": True, "complete": True, "errored": False, **extra}


# --------------------------------------------------------------------------- counting


def test_counts_of_a_real_terraform_plan_match_terraforms_own_summary():
    """terraform_data_plan.json/.txt were produced by Terraform itself (see the fixture)."""
    summary = summarize(load_fixture("terraform_data_plan.json"))
    text = fixture_path("terraform_data_plan.txt").read_text(encoding="utf-8")
    add, change, destroy = map(int, re.search(
        r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy\.", text).groups())

    assert summary.terraform_totals() == (add, change, destroy) == (2, 1, 2)
    assert {kind: summary.counts[kind] for kind in ("create", "update", "replace", "destroy")} \
        == {"create": 1, "update": 1, "replace": 1, "destroy": 1}
    assert summary.output_changes == ["app_image"]
    assert summary.headline() == "Plan: 2 to add, 1 to change, 2 to destroy."


@pytest.mark.parametrize("actions, kinds", [
    (["no-op"], ()),
    (["read"], ()),
    (["create"], ("create",)),
    (["update"], ("update",)),
    (["delete", "create"], ("replace",)),
    (["create", "delete"], ("replace",)),
    (["delete"], ("destroy",)),
    (["forget"], ("forget",)),
    (["create", "forget"], ("create", "forget")),
    (["exorcise"], ("exorcise",)),
])
def test_every_terraform_action_list_is_classified(actions, kinds):
    assert classify(actions) == kinds


def test_a_fresh_environment_is_all_creates_and_no_danger():
    document = load_fixture("plan_fresh_environment.json")
    summary = summarize(document)

    assert summary.counts["create"] == len(document["resource_changes"]) == 12
    assert summary.terraform_totals() == (12, 0, 0)
    # Creating DB-01, NFS-01 and the NFS volume loses nothing.
    assert summary.dangers == [] and summary.notices == []
    markdown = render(document)
    assert "**Plan: 12 to add, 0 to change, 0 to destroy.**" in markdown
    assert "[!CAUTION]" not in markdown


def test_a_plan_without_changes_says_so_and_lists_nothing():
    summary = summarize(load_fixture("plan_no_changes.json"))

    assert not summary.has_changes
    markdown = render_markdown(summary, "No changes. Your infrastructure matches the"
                               " configuration.\n", title="Terraform plan · `staging`")
    assert "**No changes. The infrastructure matches the configuration.**" in markdown
    assert "resource changes</summary>" not in markdown
    assert "| ➕ create" not in markdown


def test_updates_replacements_outputs_and_changes_made_outside_terraform():
    document = load_fixture("plan_routine_update.json")
    summary = summarize(document)

    assert (summary.counts["create"], summary.counts["update"], summary.counts["replace"],
            summary.counts["destroy"]) == (1, 4, 1, 0)
    assert summary.headline() == "Plan: 2 to add, 4 to change, 1 to destroy."
    # A replaced security-group rule is a replacement, but it holds no data.
    assert summary.dangers == []
    assert summary.output_changes == ["app_private_ips"]
    assert summary.changed_outside == [
        "aws_vpc_security_group_ingress_rule.security-groups_log-in-5601-admin_C43D2AE0"]

    markdown = render(document)
    assert "| 1 | 4 | 1 | 0 |" in markdown
    assert "forced by `cidr_ipv4`" in markdown
    assert "`instance_type`" in markdown  # what an in-place update changes
    assert "Outputs that change: `app_private_ips`." in markdown
    assert "Changed outside Terraform since the last apply" in markdown


def test_import_move_and_forget_are_counted_and_data_sources_are_not():
    summary = summarize(load_fixture("plan_refactor.json"))

    assert summary.counts == {"import": 1, "move": 1, "forget": 1}
    assert all(not change.address.startswith("data.") for change in summary.changes)
    assert summary.headline() == ("Plan: 0 to add, 0 to change, 0 to destroy."
                                  " Also 1 to import, 1 to forget, 1 to move.")
    markdown = render(load_fixture("plan_refactor.json"))
    assert "imports `sg-0f9b6d2a4c7e8f0b1`" in markdown
    assert "moved from `aws_instance.LOG-01_instance_C84468FE`" in markdown


# --------------------------------------------------------------------------- danger


def test_destroying_or_replacing_db_nfs_and_the_nfs_volume_is_called_out():
    summary = summarize(load_fixture("plan_data_loss.json"))

    called_out = {(danger.what, danger.change.kinds) for danger in summary.dangers}
    assert called_out == {
        ("DB-01", ("replace",)),
        ("NFS-01", ("replace",)),
        ("the NFS data volume", ("destroy",)),
        ("the attachment of the NFS data volume", ("destroy",)),
    }
    # APP-3, the log volume and its attachment are destroyed too, but hold no backups or DB.
    flagged = {danger.change.address for danger in summary.dangers}
    assert not any("APP-3" in address or "log-storage" in address for address in flagged)


def test_danger_lines_are_bold_and_come_before_the_details():
    markdown = render(load_fixture("plan_data_loss.json"), "plan text")
    caution = markdown.index("> [!CAUTION]")

    assert markdown.index("**Plan: 2 to add, 0 to change, 7 to destroy.**") < caution
    assert caution < markdown.index("<details>")
    danger_lines = [line for line in markdown.splitlines() if line.startswith("> - **")]
    assert len(danger_lines) == 4 and all(line.endswith(".**") for line in danger_lines)
    db_line = next(line for line in danger_lines if "DB-01" in line)
    assert "REPLACED (destroyed, then created anew), forced by `availability_zone`" in db_line
    assert "database" in db_line
    nfs_line = next(line for line in danger_lines if line.startswith("> - **NFS-01"))
    assert "created anew, then the old one destroyed" in nfs_line


def test_danger_is_found_by_type_and_role_tag_not_by_address():
    document = load_fixture("plan_data_loss.json")
    renamed = copy.deepcopy(document)
    for number, entry in enumerate(renamed["resource_changes"]):
        entry["address"] = f"{entry['type']}.construct_{number}_0A1B2C3D"
    # An address that *looks* like the database, on a host that is not the database.
    renamed["resource_changes"].append(instance_change(
        "aws_instance.fleet_db-01_lookalike_99", ["delete"], role="app", name="APP-9"))

    assert [danger.what for danger in summarize(renamed).dangers] \
        == [danger.what for danger in summarize(document).dangers]


def test_role_tag_is_read_from_tags_all_and_case_insensitively():
    document = plan_document([instance_change(
        "aws_instance.database", ["delete", "create"], role="DB", name="DB-01",
        tag_field="tags_all")])

    assert [danger.what for danger in summarize(document).dangers] == ["DB-01"]


def test_an_nfs_attachment_is_recognised_from_the_configuration_when_ids_are_unknown():
    volume = {"address": "aws_ebs_volume.backup_disk_1A2B3C4D", "mode": "managed",
              "type": "aws_ebs_volume", "name": "backup_disk_1A2B3C4D", "provider_name": AWS,
              "change": {"actions": ["create"], "before": None,
                         "after": {"size": 50, "tags": {"Role": "nfs"}},
                         "after_unknown": {"id": True}}}
    attachment = {"address": "aws_volume_attachment.backup_attach_5E6F7A8B", "mode": "managed",
                  "type": "aws_volume_attachment", "name": "backup_attach_5E6F7A8B",
                  "provider_name": AWS,
                  "change": {"actions": ["delete", "create"],
                             "before": {"device_name": "/dev/sdf", "volume_id": "vol-0old"},
                             "after": {"device_name": "/dev/sdg"},
                             "after_unknown": {"volume_id": True}}}
    configuration = {"root_module": {"resources": [{
        "address": "aws_volume_attachment.backup_attach_5E6F7A8B",
        "type": "aws_volume_attachment", "mode": "managed",
        "expressions": {"volume_id": {"references": [
            "aws_ebs_volume.backup_disk_1A2B3C4D.id", "aws_ebs_volume.backup_disk_1A2B3C4D"]}},
    }]}}
    document = plan_document([volume, attachment], configuration=configuration)

    assert [danger.what for danger in summarize(document).dangers] \
        == ["the attachment of the NFS data volume"]


def test_an_attachment_of_an_unguarded_volume_is_not_called_out():
    summary = summarize(load_fixture("plan_data_loss.json"))
    log_attachment = next(change for change in summary.changes
                          if change.address.startswith("aws_volume_attachment.log"))

    assert "destroy" in log_attachment.kinds
    assert log_attachment not in [danger.change for danger in summary.dangers]


# --------------------------------------------------------------------------- notices


def test_a_changed_user_data_hash_on_a_running_host_is_a_notice_not_a_danger():
    summary = summarize(load_fixture("plan_routine_update.json"))

    assert sorted(notice.change.display_name for notice in summary.notices) \
        == ["production-APP-1", "production-APP-2", "production-DB-01"]
    assert summary.dangers == []
    markdown = render(load_fixture("plan_routine_update.json"))
    note = markdown[markdown.index("> [!NOTE]"):markdown.index("<details>")]
    assert "EC2 runs user data only at first boot" in note
    assert "`production-DB-01` `aws_instance.DB-01_instance_F32719F2`" in note
    assert "LOG-01" not in note  # its update changes the instance type only


@pytest.mark.parametrize("actions", [["delete", "create"], ["create"]])
def test_a_new_host_runs_its_new_user_data_so_there_is_no_notice(actions):
    change = instance_change("aws_instance.app", actions, role="app", name="APP-1",
                             before_tags={"UserDataSha256": "old"},
                             after_tags={"UserDataSha256": "new"})

    assert summarize(plan_document([change])).notices == []


# --------------------------------------------------------------------------- Markdown


def test_the_marker_is_the_first_line_and_the_counts_come_first():
    markdown = render(load_fixture("plan_routine_update.json"), "text")
    lines = markdown.splitlines()

    assert lines[0] == "<!-- terraform-plan-comment stack=production -->"
    assert lines[1].startswith("### Terraform plan")
    assert next(line for line in lines[2:] if line).startswith("**Plan: ")


def test_the_plan_text_is_folded_and_cannot_break_out_of_its_code_block():
    hostile = "```\n</details>\n# heading\n````\n"
    markdown = render(load_fixture("plan_routine_update.json"), hostile)
    folded = markdown[markdown.index("<summary>Plan output"):]

    assert "`````text\n" in folded  # a fence longer than any run inside the text
    assert folded.count("`````") == 2
    assert markdown.count("<details>") == 2 and markdown.count("</details>") == 3


def test_ansi_colours_are_removed_from_the_plan_text():
    markdown = render(load_fixture("plan_no_changes.json"), "\x1b[1m\x1b[32mNo changes.\x1b[0m")

    assert "\x1b" not in markdown and "No changes." in markdown


def test_inline_code_survives_backticks_and_table_pipes():
    assert inline_code("a`b") == "``a`b``"
    assert inline_code("x|y") == "`x\\|y`"
    assert inline_code("`edge`") == "`` `edge` ``"


def test_the_footer_names_the_commit_run_and_artifact():
    context = Context(commit="0123456789abcdef0123",
                      run_url="https://github.com/o/r/actions/runs/7",
                      artifact="terraform-plan-production")
    markdown = render(load_fixture("plan_no_changes.json"), "", context=context)

    assert "commit `0123456789ab`" in markdown
    assert "[workflow run](https://github.com/o/r/actions/runs/7)" in markdown
    assert "plan file in artifact `terraform-plan-production`" in markdown


def test_a_failed_plan_replaces_the_comment_with_a_pointer_to_the_run():
    body = render_failure("staging", Context(run_url="https://github.com/o/r/actions/runs/9"))

    assert body.startswith(comment_marker("staging") + "\n")
    assert "plan failed" in body and "https://github.com/o/r/actions/runs/9" in body


# --------------------------------------------------------------------------- truncation


def _huge_plan(hosts=4000):
    """Thousands of app hosts updated in place, plus DB-01 replaced, as one plan."""
    changes = [instance_change(f"aws_instance.fleet_app-{n}_host_instance_{n:08X}", ["update"],
                               role="app", name=f"APP-{n}",
                               before_tags={"UserDataSha256": "a"},
                               after_tags={"UserDataSha256": "b"}) for n in range(hosts)]
    changes.append(instance_change("aws_instance.fleet_db-01_host_instance_3E8B5A61",
                                   ["delete", "create"], role="db", name="DB-01"))
    text = "\n".join(f'  # aws_instance.fleet_app-{n} will be updated in-place ÿ€ 🚀\n'
                     f'  ~ resource "aws_instance" "app_{n}" {{\n'
                     f'      ~ tags = {{ "UserDataSha256" = "a" -> "b" }}\n    }}'
                     for n in range(hosts))
    return plan_document(changes), text + "\n\nPlan: 1 to add, 4000 to change, 1 to destroy.\n"


def test_a_huge_plan_stays_under_the_comment_limit_and_says_it_truncated():
    document, text = _huge_plan()
    assert len(text) > 4 * COMMENT_LIMIT
    markdown = render(document, text, context=Context(artifact="terraform-plan-production"))

    assert len(markdown) <= COMMENT_LIMIT
    assert len(markdown.encode("utf-8")) <= COMMENT_LIMIT
    assert len(markdown) > COMMENT_LIMIT * 0.9  # it uses the room it has
    warning = next(line for line in markdown.splitlines() if "Truncated" in line)
    assert "65,536" in warning and "artifact `terraform-plan-production`" in warning
    shown = int(re.search(r"shows the first (\d+) of 16002 lines", warning).group(1))
    assert 0 < shown < 16002
    assert f"… truncated: {16002 - shown} more lines not shown" in markdown
    # What matters most survives the cut: counts, the danger, the end of the document.
    assert "**Plan: 1 to add, 4000 to change, 1 to destroy.**" in markdown
    assert "> - **DB-01 `aws_instance.fleet_db-01_host_instance_3E8B5A61` will be REPLACED" \
        in markdown
    assert markdown.count("<details>") == markdown.count("</details>") == 2
    assert markdown.rstrip().endswith("</sub>")


def test_the_resource_list_gives_way_before_the_plan_text_does():
    document, text = _huge_plan()
    markdown = render(document, text)

    rows = re.search(r"the resource list shows (\d+) of 4001 changes", markdown)
    assert rows and 0 < int(rows.group(1)) < 4001
    assert re.search(r"\| … \| \d+ more, not shown \(truncated\) \|", markdown)


@pytest.mark.parametrize("with_text", [True, False])
def test_truncation_respects_any_limit(with_text):
    document, text = _huge_plan(hosts=300)
    text = text if with_text else None
    whole = len(render(document, text, limit=10**9).encode("utf-8"))
    for limit in range(3_000, 70_000, 1_733):
        markdown = render(document, text, limit=limit)

        assert len(markdown.encode("utf-8")) <= limit, limit
        assert ("Truncated to stay under GitHub's limit" in markdown) == (whole > limit)
        assert markdown.count("<details>") == markdown.count("</details>")


def test_a_plan_that_fits_is_not_truncated():
    document, text = _huge_plan(hosts=40)
    markdown = render(document, text)

    assert len(markdown) < COMMENT_LIMIT
    assert "runcated" not in markdown
    assert "Plan: 1 to add, 4000 to change, 1 to destroy." in markdown  # the last text line


def test_one_enormous_line_is_cut_rather_than_hiding_the_whole_text():
    policy = '  + policy = "' + "x" * 200_000 + '"'
    markdown = render(load_fixture("plan_routine_update.json"), "before\n" + policy + "\nafter")

    assert len(markdown) <= COMMENT_LIMIT
    assert "before" in markdown and "after" in markdown
    assert "(line cut: too long)" in markdown
    assert plan_comment.MAX_LINE_CHARS < len(policy)
