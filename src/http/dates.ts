/**
 * HTTP-date (RFC 9110 §5.6.7), read strictly: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete
 * forms a recipient must still accept, rfc850-date (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime-date
 * (`Sun Nov  6 08:49:37 1994`). Nothing else is a date: not `UTC` for `GMT`, a missing comma, doubled spaces,
 * dashes in an IMF-fixdate, a one-digit hour or day, a numeric zone, nor a list of dates (several field lines
 * joined with ", "). The names are case-sensitive, as the grammar says. Whether the weekday matches the date is
 * not checked (the RFC leaves it to the date). Cheap enough for request fields: one anchored regex, no
 * `Date.parse`.
 */

const MONTHS: Readonly<Record<string, number>> = { Jan: 0, Feb: 1, Mar: 2, Apr: 3, May: 4, Jun: 5, Jul: 6, Aug: 7, Sep: 8, Oct: 9, Nov: 10, Dec: 11 };
const MONTH = '(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const TIME = '(\\d\\d):(\\d\\d):(\\d\\d)';
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d\\d) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d\\d)-${MONTH}-(\\d\\d) ${TIME} GMT$`);
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} (\\d\\d| \\d) ${TIME} (\\d{4})$`);
const FIFTY_YEARS_MS = 50 * 365.25 * 86_400_000;

/** Milliseconds since the epoch, or NaN when the fields do not name a real instant (31 Feb, hour 24, …). */
function instant(year: number, month: number, day: number, hour: number, minute: number, second: number): number {
  // second 60 is allowed by the grammar (a leap second); it reads as the next minute's 00.
  if (day < 1 || hour > 23 || minute > 59 || second > 60) return NaN;
  const ms = Date.UTC(year, month, day, hour, minute, second);
  // Date.UTC rolls 31 Feb over into March: a day past the month's end is not a date.
  return new Date(Date.UTC(year, month, day)).getUTCDate() === day ? ms : NaN;
}

/**
 * The instant an HTTP-date names, in ms since the epoch, or NaN when `value` is not an HTTP-date. Optional
 * whitespace around the value is allowed (it is not part of a field value). `now` places an rfc850-date's two-digit
 * year: one that would lie more than 50 years ahead is the most recent past year with those digits.
 */
export function parseHttpDate(value: string, now?: number): number {
  const text = value.length > 0 && (value.charCodeAt(0) <= 32 || value.charCodeAt(value.length - 1) <= 32) ? value.replace(/^[ \t]+|[ \t]+$/g, '') : value;
  let m = IMF_FIXDATE.exec(text);
  if (m !== null) return instant(Number(m[3]), MONTHS[m[2]!]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
  m = ASCTIME_DATE.exec(text);
  if (m !== null) return instant(Number(m[6]), MONTHS[m[1]!]!, Number(m[2]!.trim()), Number(m[3]), Number(m[4]), Number(m[5]));
  m = RFC850_DATE.exec(text);
  if (m !== null) {
    const twoDigits = Number(m[3]);
    const clock = now ?? Date.now();
    const nowYear = new Date(clock).getUTCFullYear();
    const year = nowYear - (nowYear % 100) + twoDigits;
    const ms = instant(year, MONTHS[m[2]!]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
    // More than 50 years ahead: the most recent past year with the same last two digits.
    return ms - clock > FIFTY_YEARS_MS ? instant(year - 100, MONTHS[m[2]!]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6])) : ms;
  }
  return NaN;
}
