"""Load the seed protocols, demo sites and enrolled demo participants; create an admin login,
one login per role at each demo site (trial-wide roles once per trial) and, where plain http
to this machine is allowed (DEBUG), a demo webhook subscription of the Berlin site system to
the app's own demo receiver, so the admin shows webhook deliveries going out.

The logins that need a second factor (the admin, the unblinded pharmacists) get an
authenticator key each, printed with the logins.

Idempotent: run it on every `make run`. Protocol versions already imported are left alone,
demo participants are only created once, and each login keeps the password it was given
first (kept, like the admin's, in a file under var/ readable by its owner only).
"""

from __future__ import annotations

import datetime as dt
import secrets
from base64 import b32encode
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from participants.models import Participant
from participants.services import participant_register
from scheduler.access import site_now, site_today
from scheduler.api.demo import demo_receiver_url
from scheduler.booking import visit_slots
from scheduler.models import Membership, ScheduledVisit, WebhookSubscription
from scheduler.security import second_factor_required
from scheduler.services import (
    participant_enroll,
    participant_screen_fail,
    visit_book,
    visit_record_done,
)
from scheduler.webhooks import EVENT_TYPES, webhook_subscription_create
from trials.models import (
    Arm,
    ProtocolVersion,
    ResourceHours,
    Site,
    SiteHours,
    SiteResource,
    StaffShift,
    Trial,
    TrialSite,
)
from trials.protocol_file import parse_protocol
from trials.services import protocol_import

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocols"


# The trial and site whose screening log the demo fills (their participants are in every phase).
SCREENING_DEMO = ("niams-ani-vascular", "nih-cc")


def demo_mailbox(code: str) -> str:
    """A demo site's coordinator mailbox: on example.org, a domain reserved for examples
    (RFC 2606), so no demo message can reach a real person."""
    return f"coordinators+{code}@example.org"


SITES = [
    {
        "code": "nih-cc",
        "name": "NIH Clinical Center",
        "timezone": "America/New_York",
        "country": "US",
        "address": "10 Center Drive, Bethesda, MD 20892, USA",
        "phone": "+1 301-496-2563",
        "email": demo_mailbox("nih-cc"),
    },
    {
        "code": "tsukuba",
        "name": "University of Tsukuba Hospital",
        "timezone": "Asia/Tokyo",
        "country": "JP",
        "address": "2-1-1 Amakubo, Tsukuba, Ibaraki 305-8576, Japan",
        "phone": "+81-29-853-3186",
        "email": demo_mailbox("tsukuba"),
    },
    {
        "code": "berlin",
        "name": "Berlin Rheumatology Research Site",
        "timezone": "Europe/Berlin",
        "country": "DE",
        "address": "Charitéplatz 1, 10117 Berlin, Germany",
        "phone": "+49 30 450 50",
        "email": demo_mailbox("berlin"),
    },
]

# The demo sites' calendars, which bookings are checked against (scheduler/booking.py). Public
# holidays need no rows: they follow each site's country (US federal holidays for the NIH
# Clinical Center, Japanese public holidays for Tsukuba). Berlin keeps no calendar, so its
# bookings are checked against nothing, as before sites had calendars.
WEEKDAYS = range(5)
T = dt.time
SITE_CALENDARS: dict[str, dict[str, Any]] = {
    "nih-cc": {
        "hours": (T(7, 30), T(17, 30)),
        # (kind, name, own hours or None for the clinic's)
        "resources": [
            *(("infusion chair", f"Chair {n}", None) for n in range(1, 5)),
            ("PET/CT scanner", "PET/CT 1", (T(8), T(16))),
            ("CAVI device", "CAVI 1", None),
        ],
        # Two infusion nurses, each watching two chairs at once: one per two chairs.
        "staff": [("infusion nurse", (T(7, 30), T(17, 30)), 4)],
    },
    # University of Tsukuba Hospital's outpatient hours, weekdays 08:30-17:15.
    "tsukuba": {"hours": (T(8, 30), T(17, 15)), "resources": [], "staff": []},
}

# Which demo sites run which seed trial (by trial code); unlisted trials run at Berlin.
TRIAL_SITES = {
    "niams-ani-vascular": ["nih-cc"],
    "tsukuba-early-ani": ["tsukuba"],
    "jasmine-myositis": ["nih-cc", "tsukuba", "berlin"],
}

DEMO_PARTICIPANTS_PER_TRIAL = 3

Role = Membership.Role
# One login per role at each demo site, acting for every trial the site runs...
SITE_ROLES = [
    (Role.COORDINATOR, "coordinator"),
    (Role.INVESTIGATOR, "investigator"),
    (Role.UNBLINDED_PHARMACIST, "pharmacist"),
    (Role.SITE_SYSTEM, "system"),
]
# ...and one per trial-wide role in each trial.
TRIAL_ROLES = [(Role.SPONSOR_MONITOR, "monitor"), (Role.DATA_MANAGER, "datamanager")]

# The demo webhook subscription: the Berlin site system, for a trial that runs at all three
# demo sites, so only Berlin's events reach it.
DEMO_WEBHOOK_OWNER = "system-berlin"
DEMO_WEBHOOK_TRIAL = "jasmine-myositis"
DEMO_WEBHOOK_SITE = "berlin"
DEMO_WEBHOOK_DESCRIPTION = "demo: the app's own receiver (DEBUG only)"


class Command(BaseCommand):
    help = "Load seed protocols, demo sites and demo participants, and create the admin login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-admin", action="store_true", help="do not create a login")

    def handle(self, *args: Any, no_admin: bool = False, **options: Any) -> None:
        self._import_protocols()
        with transaction.atomic():
            sites = self._sites()
            self._site_calendars(sites)
            for trial in Trial.objects.order_by("code"):
                for code in TRIAL_SITES.get(trial.code, ["berlin"]):
                    TrialSite.objects.get_or_create(trial=trial, site=sites[code])
        # The logins and the demo subscription come before the demo participants, so their
        # enrollments and visits are the demo subscription's first deliveries; the logins are
        # printed last, where a newcomer looks for them.
        logins = self._role_logins(sites) if not no_admin else []
        webhook_note = self._demo_webhook(sites) if not no_admin else ""
        with transaction.atomic():
            for trial in Trial.objects.order_by("code"):
                codes = TRIAL_SITES.get(trial.code, ["berlin"])
                self._participants(trial, [sites[code] for code in codes])
            self._screening(sites)
        if not no_admin:
            self._admin_login()
            self._print_logins(logins)
            self._print_second_factors()
            self.stdout.write(webhook_note)

    def _demo_webhook(self, sites: dict[str, Site]) -> str:
        """Subscribe the Berlin site system to every event of one trial at Berlin, delivered
        to this app's demo receiver (scheduler/api/demo.py), once. Only where plain http to
        this machine is allowed (DEBUG): elsewhere the receiver does not exist."""
        url = demo_receiver_url()
        if not settings.WEBHOOK_ALLOW_HTTP_LOOPBACK and not url.startswith("https://"):
            return (
                "Demo webhook subscription: not created (plain http to this machine needs "
                "DEBUG=true or WEBHOOK_ALLOW_HTTP_LOOPBACK=true when load_demo runs).\n"
            )
        owner = get_user_model().objects.get(username=DEMO_WEBHOOK_OWNER)
        trial = Trial.objects.filter(code=DEMO_WEBHOOK_TRIAL).first()
        if trial is None:
            return ""
        subscription = WebhookSubscription.objects.filter(
            owner=owner, trial=trial, url=url, is_active=True
        ).first()
        if subscription is None:
            subscription, _secret = webhook_subscription_create(
                owner=owner,
                trial=trial,
                sites=[sites[DEMO_WEBHOOK_SITE]],
                url=url,
                events=list(EVENT_TYPES),
                description=DEMO_WEBHOOK_DESCRIPTION,
                by=None,
            )
        return (
            f"Demo webhook subscription {subscription.pk}: {owner.username} gets every "
            f"{trial.code} event at {DEMO_WEBHOOK_SITE} at {url}; its deliveries are in the "
            "admin's reminders list (channel webhook).\n"
        )

    def _import_protocols(self) -> None:
        for path in sorted(PROTOCOL_DIR.glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            document = parse_protocol(text, source=str(path))
            exists = ProtocolVersion.objects.filter(
                trial__code=document.trial.code, label=document.version.label
            ).exists()
            if exists:
                continue
            version = protocol_import(text=text, source=f"seeds/protocols/{path.name}")
            self.stdout.write(f"imported {version}")

    def _sites(self) -> dict[str, Site]:
        sites = {}
        for fields in SITES:
            site, _ = Site.objects.get_or_create(code=fields["code"], defaults=fields)
            if not site.email:
                # Demo databases loaded before sites had mailboxes get theirs now.
                site.email = fields["email"]
                site.save(update_fields=["email"])
            sites[site.code] = site
        return sites

    def _site_calendars(self, sites: dict[str, Site]) -> None:
        """Each demo site's hours, resources and staff, once: a site that already has hours
        or resources (an earlier load, or a coordinator's own) is left as it is."""
        for code, calendar in SITE_CALENDARS.items():
            site = sites[code]
            if SiteHours.objects.filter(site=site).exists() or site.resources.exists():
                continue
            opens, closes = calendar["hours"]
            SiteHours.objects.bulk_create(
                SiteHours(site=site, weekday=day, start=opens, end=closes) for day in WEEKDAYS
            )
            for kind, name, own_hours in calendar["resources"]:
                resource = SiteResource.objects.create(site=site, kind=kind, name=name)
                if own_hours is not None:
                    ResourceHours.objects.bulk_create(
                        ResourceHours(
                            resource=resource, weekday=day, start=own_hours[0], end=own_hours[1]
                        )
                        for day in WEEKDAYS
                    )
            for kind, (start, end), count in calendar["staff"]:
                StaffShift.objects.bulk_create(
                    StaffShift(site=site, kind=kind, weekday=day, start=start, end=end, count=count)
                    for day in WEEKDAYS
                )
            self.stdout.write(f"gave {site.code} its calendar")

    def _participants(self, trial: Trial, sites: list[Site]) -> None:
        if Participant.objects.filter(trial=trial).exists():
            return
        version = ProtocolVersion.objects.filter(trial=trial, status="published").latest("id")
        anchors = list(version.anchor_set.order_by("order"))
        arms = list(Arm.objects.filter(version=version).order_by("order"))
        # The latest of the sites' todays: the demo's next booking is ahead at every site.
        today = max(site_today(site) for site in sites)
        for number in range(1, DEMO_PARTICIPANTS_PER_TRIAL + 1):
            site = sites[(number - 1) % len(sites)]
            # Spread the demo calendars: one started 10 weeks ago, one 3 weeks ago, one starts
            # in 3 weeks, so the admin shows visits past, due and upcoming.
            day1 = today + dt.timedelta(weeks=[-10, -3, 3][number - 1])
            dates = {}
            for anchor in anchors:
                if anchor.relative_to:
                    continue
                dates[anchor.code] = day1 - dt.timedelta(days=30 if anchor.code == "consent" else 0)
            if "psl_start" in dates:
                dates["psl_start"] = day1 - dt.timedelta(days=7)
                dates["day1"] = day1
            age = 6 + 3 * number if _is_pediatric(version) else 30 + 11 * number
            participant = participant_register(
                trial=trial,
                site=site,
                study_id=f"{site.code.upper()}-{number:03d}",
                birth_date=dates.get("consent", day1) - dt.timedelta(days=int(age * 365.25) + 40),
                anchors=dates,
                weight_kg=Decimal(52 + 8 * number),
                email=f"participant{number}@example.org",
                language="ja" if site.timezone == "Asia/Tokyo" else "en",
            )
            # Enrolled on the consent day (a week before Day 1 without one), and never after
            # the site's own today: the day is kept, and a participation ends on or after it.
            here = site_today(site)
            participant_enroll(
                participant=participant,
                on=min(here, dates.get("consent", day1 - dt.timedelta(days=7))),
                arm=arms[(number - 1) % len(arms)] if arms else None,
            )
            _demo_history(participant, here)
        self.stdout.write(f"enrolled {DEMO_PARTICIPANTS_PER_TRIAL} demo participants in {trial}")

    def _screening(self, sites: dict[str, Site]) -> None:
        """A screening log worth reading at the NIAMS site: one candidate the machine checks
        refuse (17 on the consent date), one awaiting the investigator's sign-off, one
        screen-failed with its reason."""
        trial = Trial.objects.filter(code=SCREENING_DEMO[0]).first()
        site = sites.get(SCREENING_DEMO[1])
        if trial is None or site is None or trial.participants.filter(status="screening").exists():
            return
        today = site_today(site)
        consent = today - dt.timedelta(days=3)
        candidates = []
        for number, age in ((1, 17), (2, 44), (3, 52)):
            candidates.append(
                participant_register(
                    trial=trial,
                    site=site,
                    study_id=f"{site.code.upper()}-S{number:02d}",
                    birth_date=consent - dt.timedelta(days=int(age * 365.25) + 40),
                    anchors={"consent": consent, "day1": today + dt.timedelta(days=14)},
                    weight_kg=Decimal(70),
                    email=f"candidate{number}@example.org",
                )
            )
        participant_screen_fail(
            participant=candidates[2],
            on=today,
            by=None,
            reason="exclusion criterion met at the screening visit",
        )
        self.stdout.write(f"registered 3 screening candidates of {trial} at {site.code}")

    def _admin_login(self) -> None:
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        password_file.parent.mkdir(parents=True, exist_ok=True)
        user_model = get_user_model()
        user = user_model.objects.filter(username="admin").first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = user_model.objects.create_superuser("admin", "admin@example.org", password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            password_file.write_text(password + "\n", encoding="utf-8")
            password_file.chmod(0o600)
        password = password_file.read_text(encoding="utf-8").strip()
        self.stdout.write(
            "\nAdmin login for http://127.0.0.1:8000/admin/ :  user admin  "
            f"password {password}\n(kept in {password_file})\n"
        )

    def _role_logins(self, sites: dict[str, Site]) -> list[tuple[str, str, str]]:
        """A login per role, so a newcomer sees the product through each role's eyes: what
        a coordinator of one site sees, what the monitor of a trial sees, what stays blinded.
        The site systems' logins are not staff: a machine uses the REST API."""
        passwords_file = Path(settings.VAR_DIR) / "demo-logins.txt"
        passwords = _read_passwords(passwords_file)
        logins: list[tuple[str, str]] = []
        with transaction.atomic():
            for code, site in sites.items():
                trials = [
                    ts.trial for ts in TrialSite.objects.filter(site=site).order_by("trial__code")
                ]
                for role, name in SITE_ROLES:
                    username = f"{name}-{code}"
                    user = self._demo_user(username, passwords, staff=role != Role.SITE_SYSTEM)
                    for trial in trials:
                        Membership.objects.get_or_create(
                            user=user, trial=trial, site=site, role=role
                        )
                    logins.append((username, f"{role.label} at {site.name}"))
            for trial in Trial.objects.order_by("code"):
                for role, name in TRIAL_ROLES:
                    username = f"{name}-{trial.code}"
                    user = self._demo_user(username, passwords, staff=True)
                    Membership.objects.get_or_create(user=user, trial=trial, site=None, role=role)
                    logins.append((username, f"{role.label} of {trial.code}"))
        passwords_file.write_text(
            "".join(f"{user} {password}\n" for user, password in sorted(passwords.items())),
            encoding="utf-8",
        )
        passwords_file.chmod(0o600)
        return [(username, passwords[username], what) for username, what in logins]

    def _print_logins(self, logins: list[tuple[str, str, str]]) -> None:
        passwords_file = Path(settings.VAR_DIR) / "demo-logins.txt"
        self.stdout.write("Logins per role (same URL; each sees only what its role allows):")
        for username, password, what in logins:
            self.stdout.write(f"  user {username:<36} password {password}  {what}")
        self.stdout.write(f"(kept in {passwords_file})\n")

    def _print_second_factors(self) -> None:
        """The demo logins that need a second factor (the admin manages users; pharmacists are
        unblinded) get an authenticator key, made once and kept in the database, so the demo
        shows the same sign-in a deployment has rather than a switch that turns it off."""
        lines = []
        for user in get_user_model().objects.filter(is_staff=True).order_by("username"):
            if not second_factor_required(user):
                continue
            device = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()
            if device is None:
                device = TOTPDevice.objects.create(user=user, name="demo", confirmed=True)
            key = b32encode(device.bin_key).decode()
            lines.append(f"  user {user.username:<36} two-factor key {key}")
        if not lines:
            return
        self.stdout.write(
            "Two-factor sign-in (these logins are asked for a code after the password): add the "
            "key to an authenticator app, or print a code with "
            "`oathtool --totp -b KEY`:"
        )
        for line in lines:
            self.stdout.write(line)
        self.stdout.write("")

    def _demo_user(self, username: str, passwords: dict[str, str], *, staff: bool) -> Any:
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is not None and username in passwords:
            return user
        passwords[username] = secrets.token_urlsafe(12)
        if user is None:
            user = user_model(username=username, email=f"{username}@example.org", is_staff=staff)
            user.set_password(passwords[username])
            user.save()
        else:
            user.set_password(passwords[username])
            user.save(update_fields=["password"])
        return user


def _read_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {user: password.strip() for user, password in pairs}


def _demo_history(participant: Participant, today: dt.date) -> None:
    """Give a demo calendar a past: visits whose window has closed are done on their target
    day (but the last one, left overdue to show what that looks like), and the next visit
    is booked at the first slot the site's calendar offers inside its window (the nearest
    outside it, as a deviation, when the window is all weekend or holiday), or at 09:30 site
    time on its target day where the site keeps no calendar."""
    visits = list(
        ScheduledVisit.objects.filter(participant=participant)
        .select_related("visit_definition")
        .order_by("target_date", "id")
    )
    past = [v for v in visits if v.window_end < today]
    for visit in past[:-1]:
        visit_record_done(
            visit=visit,
            actual_date=visit.target_date,
            actual_time=dt.time(9, 30),
            by=None,
            reason="demo data",
        )
    upcoming = next((v for v in visits if v.target_date > today and v.status == "planned"), None)
    if upcoming is None:
        return
    found = visit_slots(upcoming, now=site_now(participant.site), count=1)
    slot = (found.slots or found.deviations or (None,))[0]
    if slot is None:
        day, at = upcoming.target_date, dt.time(9, 30)
    else:
        day, at = slot.day, slot.start.time()
    visit_book(visit=upcoming, local_date=day, local_time=at, by=None, reason="demo data")


def _is_pediatric(version: ProtocolVersion) -> bool:
    return version.eligibilitycriterion_set.filter(
        check_attribute="age_years", check_max__lte=18
    ).exists()
