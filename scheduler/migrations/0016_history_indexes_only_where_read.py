# Audit rows of visits and procedures are indexed only where they are read (issue 13): by row,
# by participant (0014's (participant_id, history_id) index, which also serves participant_id
# alone), by visit, by date and by user. simple_history indexes every related field of a
# history table and every unique one; the five dropped here were never read, and each cost
# every calendar write its upkeep: inserting a cohort's 54,000 visit audit rows took 600 to 720 ms
# with them and 260 to 360 ms without them (three runs each, in one transaction rolled
# back). On Postgres each is a DROP INDEX, a moment's lock; on SQLite the table is rebuilt.

import uuid

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("participants", "0005_enrolled_on"),
        ("scheduler", "0015_site_feed_trials"),
        ("trials", "0006_history_reason_text"),
    ]

    operations = [
        migrations.AlterField(
            model_name="historicalscheduledprocedure",
            name="procedure",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="trials.proceduredefinition",
            ),
        ),
        migrations.AlterField(
            model_name="historicalscheduledvisit",
            name="ical_uid",
            field=models.UUIDField(default=uuid.uuid4, editable=False),
        ),
        migrations.AlterField(
            model_name="historicalscheduledvisit",
            name="participant",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="participants.participant",
            ),
        ),
        migrations.AlterField(
            model_name="historicalscheduledvisit",
            name="protocol_version",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="trials.protocolversion",
            ),
        ),
        migrations.AlterField(
            model_name="historicalscheduledvisit",
            name="visit_definition",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="trials.visitdefinition",
            ),
        ),
    ]
