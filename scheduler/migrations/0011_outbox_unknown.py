# The outbox's "unknown" status: a row whose worker stopped mid-send on a channel without
# de-duplication waits for a person's decision (scheduler/outbox/sweep.py).

from django.db import migrations, models

STATUS = models.CharField(
    choices=[
        ("pending", "Pending"),
        ("sending", "Sending"),
        ("sent", "Sent"),
        ("failed", "failed (will retry)"),
        ("dead", "dead (gave up)"),
        ("cancelled", "Cancelled"),
        ("unknown", "unknown (a person decides)"),
    ],
    default="pending",
    max_length=10,
)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0009_booking_holds"),
    ]

    operations = [
        migrations.AlterField(model_name="reminder", name="status", field=STATUS),
        migrations.AlterField(model_name="historicalreminder", name="status", field=STATUS),
    ]
