"""The admin's language: English or Japanese, as each person chooses.

- A signed-in person's choice is stored (`UserPreference`) by `user_language_set`, called by
  the language switch in the admin header (`scheduler.views.language_switch`); it is copied
  into the session at sign-in and on each switch, and `UserLanguageMiddleware` applies it to
  every request without reading a table.
- Without a choice (and for anyone not signed in) Django's LocaleMiddleware follows the
  browser's Accept-Language.
- Participants' texts follow `Participant.language`, whoever sends them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from scheduler.models import USER_LANGUAGE_SESSION_KEY, UserPreference

SUPPORTED_LANGUAGES = tuple(code for code, _name in settings.LANGUAGES)


class UnknownLanguage(ValueError):
    """A language this product does not offer."""


def check_language(language: str) -> str:
    if language not in SUPPORTED_LANGUAGES:
        raise UnknownLanguage(
            f"{language!r} is not a language of this site; choose one of: "
            + ", ".join(SUPPORTED_LANGUAGES)
        )
    return language


@transaction.atomic
def user_language_set(*, user: Any, language: str, session: Any = None) -> str:
    """Store a person's language (and put it in their current session, when given).

    Someone not signed in has nothing stored: the choice lasts for their session only.
    """
    check_language(language)
    if user is not None and user.is_authenticated:
        UserPreference.objects.update_or_create(user=user, defaults={"language": language})
    if session is not None:
        session[USER_LANGUAGE_SESSION_KEY] = language
    return language
