"""iCalendar: pure building (`ical`), what an event says (`events`), feeds, iMIP messages."""
