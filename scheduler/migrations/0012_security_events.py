# The security audit (sign-ins, failures, sign-outs, lockouts, permission and membership
# changes, who read which participant's record, exports), append-only like the history tables;
# and the "auditor" group, whose members review it in the admin.
# Depends on 0010 and 0011, which were written side by side from 0009: this one joins them.

from typing import Any

from django.db import migrations, models

from scheduler.appendonly import triggers

AUDITOR_GROUP = "auditor"
PERMISSION = "review_security_audit"


def make_append_only(apps: Any, schema_editor: Any) -> None:
    triggers.install(schema_editor.connection, ["scheduler_securityevent"])


def create_auditor_group(apps: Any, schema_editor: Any) -> None:
    # Permissions are otherwise created after the whole migrate run; the group needs its own now.
    content_type, _ = apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="scheduler", model="securityevent"
    )
    permission, _ = apps.get_model("auth", "Permission").objects.get_or_create(
        content_type=content_type,
        codename=PERMISSION,
        defaults={"name": "Can review the security audit"},
    )
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=AUDITOR_GROUP)
    group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0010_append_only_history"),
        ("scheduler", "0011_outbox_unknown"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="SecurityEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(db_index=True, verbose_name="when (UTC)")),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("login", "sign-in"),
                            ("login_failed", "failed sign-in"),
                            ("logout", "sign-out"),
                            ("lockout", "account locked"),
                            ("locked_out_attempt", "sign-in refused while locked"),
                            ("second_factor_enrolled", "second factor enrolled"),
                            ("second_factor_failed", "wrong second-factor code"),
                            ("permission_change", "permission change"),
                            ("membership_change", "membership change"),
                            ("view", "record viewed"),
                            ("export", "list exported"),
                        ],
                        max_length=32,
                        verbose_name="event",
                    ),
                ),
                (
                    "username",
                    models.CharField(blank=True, max_length=150, verbose_name="username"),
                ),
                (
                    "ip_address",
                    models.GenericIPAddressField(blank=True, null=True, verbose_name="IP address"),
                ),
                (
                    "participant_id",
                    models.BigIntegerField(blank=True, null=True, verbose_name="participant id"),
                ),
                (
                    "surface",
                    models.CharField(
                        blank=True,
                        choices=[("admin", "admin"), ("api", "API"), ("export", "export")],
                        max_length=8,
                        verbose_name="surface",
                    ),
                ),
                ("detail", models.JSONField(blank=True, default=dict, verbose_name="detail")),
            ],
            options={
                "verbose_name": "security event",
                "verbose_name_plural": "security events",
                "ordering": ["-at", "-id"],
                "permissions": [("review_security_audit", "Can review the security audit")],
                "indexes": [
                    models.Index(fields=["participant_id", "at"], name="securityevent_participant"),
                    models.Index(fields=["username", "at"], name="securityevent_username"),
                ],
            },
        ),
        migrations.RunPython(make_append_only, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(create_auditor_group, migrations.RunPython.noop, elidable=False),
    ]
