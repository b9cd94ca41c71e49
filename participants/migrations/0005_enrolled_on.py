# The enrollment's date at the site (participant_enroll's `on`), so that a withdrawal or a
# completion dated before it can be refused. Nullable, and not filled for participants enrolled
# before: only the instant the enrollment was recorded is known for them, which may be days
# after the enrollment itself, and a date guessed from it would refuse true end dates.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("participants", "0004_history_reason_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="historicalparticipant",
            name="enrolled_on",
            field=models.DateField(
                blank=True, help_text="The enrollment's date at the site.", null=True
            ),
        ),
        migrations.AddField(
            model_name="participant",
            name="enrolled_on",
            field=models.DateField(
                blank=True, help_text="The enrollment's date at the site.", null=True
            ),
        ),
    ]
