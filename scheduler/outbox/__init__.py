"""Durable messages: planning rows (`plan`), sweep and claim (`sweep`), delivery by channel
(`channels`, `sms`), and how a delivery can fail (`errors`). Tasks are named, never imported,
so the outbox does not depend on `scheduler.tasks` (which depends on it)."""
