"""The admin: the coordinators' workspace, by concern.

Django's autodiscovery imports this package; importing each module registers its admins.
- scoping: `ScopedAdmin`, the deny-by-default base whose rows come from scheduler/access.py;
- base: what the calendar pages share (site clocks, status columns, preview → confirm pages);
- visits, participants, enroll: calendars and their lifecycle;
- outbox, feeds, webhooks: what the product sends;
- sites, memberships, audit: trials, sites, who may do what, and the audit trail;
- securityaudit: sign-ins, permission changes and who read which record, for auditors.
"""

from scheduler.admin import (  # noqa: F401
    audit,
    calendars,
    enroll,
    feeds,
    memberships,
    outbox,
    participants,
    securityaudit,
    sites,
    unblinding,
    users,
    visits,
    webhooks,
    workspace,
)
