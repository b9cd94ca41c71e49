# The optional Japanese names of protocol-defined parts (the protocol file's `*_ja` fields).

from django.db import migrations, models


def _text(max_length: int | None = None) -> models.Field:
    if max_length is None:
        return models.TextField(blank=True, default="")
    return models.CharField(blank=True, default="", max_length=max_length)


class Migration(migrations.Migration):
    dependencies = [
        ("trials", "0003_trial_and_site_history"),
    ]

    operations = [
        migrations.AddField(
            model_name="trial", name="title_ja", field=_text(300), preserve_default=False
        ),
        migrations.AddField(
            model_name="historicaltrial", name="title_ja", field=_text(300), preserve_default=False
        ),
        migrations.AddField(
            model_name="anchor", name="name_ja", field=_text(120), preserve_default=False
        ),
        migrations.AddField(
            model_name="epoch", name="name_ja", field=_text(120), preserve_default=False
        ),
        migrations.AddField(
            model_name="proceduredefinition",
            name="name_ja",
            field=_text(200),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="proceduredefinition",
            name="preparation_ja",
            field=_text(),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="visitdefinition", name="name_ja", field=_text(200), preserve_default=False
        ),
        migrations.AddField(
            model_name="milestonerule", name="name_ja", field=_text(200), preserve_default=False
        ),
    ]
