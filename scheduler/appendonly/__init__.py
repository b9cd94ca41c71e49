"""The audit trail is append-only: nothing in the application can edit or wipe it.

- On Postgres every table of django-simple-history's historical models, and the security
  audit (`scheduler.SecurityEvent`), refuses UPDATE, DELETE and TRUNCATE with a trigger
  (`triggers.py`), whoever asks: the ORM, raw SQL, or a person with the application's
  database account in psql. Migration scheduler 0010 creates the trigger function and the
  triggers of the tables that exist then; after every `migrate`, `install_missing` (connected
  to post_migrate in `apps.py`) adds them to any history table created since, and the
  `appendonly.E001` check (`manage.py check --database default`) names a table without them.
- The clean-up commands django-simple-history ships (`clean_old_history`,
  `clean_duplicate_history`) are replaced by commands of the same name that refuse: this app
  is listed before `simple_history` in INSTALLED_APPS, so its commands win.
- `flush` refuses on a Postgres database that holds the trail; Django's test databases
  (named `test_…`) are emptied between tests with the triggers set aside for that statement
  (`session_replication_role = replica`, which only a database superuser may set).

SQLite (the laptop default) has no such triggers: the trail there is as safe as the file.
"""
