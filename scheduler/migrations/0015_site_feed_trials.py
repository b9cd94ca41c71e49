# A site feed showed every visit at its site, whichever trial: anyone who changes calendars of
# one trial there could hand out another trial's participants and visits. A site feed now
# shows the trials its issuer changes calendars of at the site. Feeds issued before keep
# those of their issuer (as their memberships are now); one whose issuer is gone or holds no
# such role there shows nothing until a coordinator issues a new one (closed, not open).

from typing import Any

from django.db import migrations, models

# scheduler.access.WRITE_ROLES, as they are at this migration.
WRITE_ROLES = ("coordinator", "investigator", "site_system")


def scope_site_feeds(apps: Any, schema_editor: Any) -> None:
    CalendarFeed = apps.get_model("scheduler", "CalendarFeed")
    Membership = apps.get_model("scheduler", "Membership")
    TrialSite = apps.get_model("trials", "TrialSite")
    for feed in CalendarFeed.objects.filter(site__isnull=False, created_by__isnull=False):
        at_site = set(
            TrialSite.objects.filter(site_id=feed.site_id).values_list("trial_id", flat=True)
        )
        issuers = set(
            Membership.objects.filter(user_id=feed.created_by_id, role__in=WRITE_ROLES)
            .filter(models.Q(site_id=feed.site_id) | models.Q(site__isnull=True))
            .values_list("trial_id", flat=True)
        )
        feed.trials.set(sorted(at_site & issuers))


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0014_history_newest_by_participant"),
        ("trials", "0006_history_reason_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="calendarfeed",
            name="trials",
            field=models.ManyToManyField(blank=True, related_name="+", to="trials.trial"),
        ),
        migrations.RunPython(scope_site_feeds, migrations.RunPython.noop, elidable=False),
    ]
