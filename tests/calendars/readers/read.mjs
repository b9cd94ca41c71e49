// Reads every .ics file in a directory with ical.js, the parser inside Thunderbird, and prints
// one JSON object: file name -> [{uid, start, end}] (or {error} for a file it refuses), where a
// timed value is the UTC instant in ISO 8601 ("2027-03-15T13:00:00Z"), an all-day value is
// {"date": "2027-03-15"} and a time ical.js cannot place on the time line is {"floating": "..."}.
// Run by tests/calendars/test_readers.py: one node process for all the calendars of a run.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import ICAL from "ical.js";

function reading(time) {
  if (time.isDate) {
    return { date: time.toString() };
  }
  if (time.zone === ICAL.Timezone.localTimezone) {
    return { floating: time.toString() };
  }
  // toUnixTime goes through the zone the value names (UTC, or a VTIMEZONE registered below).
  return new Date(time.toUnixTime() * 1000).toISOString().replace(".000Z", "Z");
}

const directory = process.argv[2];
const readings = {};
for (const name of readdirSync(directory).filter((n) => n.endsWith(".ics")).sort()) {
  try {
    const calendar = new ICAL.Component(ICAL.parse(readFileSync(join(directory, name), "utf8")));
    // As Thunderbird does with an imported calendar: the file's VTIMEZONEs define its TZIDs.
    ICAL.TimezoneService.reset();
    for (const vtimezone of calendar.getAllSubcomponents("vtimezone")) {
      ICAL.TimezoneService.register(vtimezone);
    }
    readings[name] = calendar.getAllSubcomponents("vevent").map((vevent) => {
      const event = new ICAL.Event(vevent);
      return { uid: event.uid, start: reading(event.startDate), end: reading(event.endDate) };
    });
  } catch (error) {
    // A calendar ical.js refuses is a finding about that calendar, not the end of the run.
    readings[name] = { error: String(error) };
  }
}
process.stdout.write(JSON.stringify(readings));
