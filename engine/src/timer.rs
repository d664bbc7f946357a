//! Timer definitions of BPMN timer events: ISO 8601 date-times, durations, repeating intervals and cron cycles, parsed and evaluated. Pure: never reads the clock (time is always an argument).
//!
//! The three BPMN forms map to [`TimerSpec`]: `timeDate` to [`parse_date_time`], `timeDuration` to
//! [`IsoDuration::parse`] and `timeCycle` to [`Cycle::parse`]. All parsers trim surrounding whitespace
//! (BPMN files often wrap the text in newlines) and report errors that name the offending text and say
//! what is expected.

use std::fmt;
use std::str::FromStr;

use chrono::offset::LocalResult;
use chrono::{DateTime, Days, FixedOffset, Months, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};

/// Why a timer definition could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("'{text}' is not an ISO 8601 duration: {reason}")]
    InvalidDuration { text: String, reason: String },
    #[error("'{text}' is not an ISO 8601 date-time: {reason}")]
    InvalidDateTime { text: String, reason: String },
    #[error("timeDate '{text}' has no offset or zone; add 'Z', '+03:00' or '@Africa/Nairobi'")]
    MissingZone { text: String },
    #[error("unknown time zone '{zone}' in '{text}': expected an IANA zone id such as 'Africa/Nairobi'")]
    UnknownZone { text: String, zone: String },
    #[error(
        "'{text}': local time {local} does not exist in {zone} (clocks skip over it at a daylight-saving \
         change); use a time outside the gap or give an explicit offset"
    )]
    NonexistentLocalTime { text: String, local: NaiveDateTime, zone: String },
    #[error("'{text}': offset {offset} is not the offset of {zone} at that time ({expected})")]
    OffsetMismatch { text: String, offset: FixedOffset, zone: String, expected: FixedOffset },
    #[error("'{text}' is not a timer cycle: {reason}")]
    InvalidCycle { text: String, reason: String },
    #[error("'{text}' is not a valid cron expression: {reason}")]
    InvalidCron { text: String, reason: String },
}

/// A parsed timer event definition.
#[allow(clippy::large_enum_variant, reason = "parsed once per timer definition; boxing would change the API")]
#[derive(Debug, Clone)]
pub enum TimerSpec {
    /// `timeDate`: fires once at this instant.
    Date(DateTime<FixedOffset>),
    /// `timeDuration`: fires once, this long after the timer is created.
    Duration(IsoDuration),
    /// `timeCycle`: fires repeatedly.
    Cycle(Cycle),
}

// ---------------------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------------------

/// An ISO 8601 duration, kept by calendar fields because P1M is not a fixed number of seconds.
///
/// Fields are kept as written (`PT90M` stays 90 minutes, it is not normalised to `PT1H30M`), so equality is
/// field by field. `millis` is below 1000 in a parsed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IsoDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub millis: u32,
}

/// One `<number><designator>` component of a duration, as scanned.
struct Component {
    value: u32,
    /// Milliseconds of a fractional part, `None` when the number had no fraction.
    millis: Option<u32>,
    designator: char,
}

impl IsoDuration {
    /// The zero duration, `P0D`.
    pub const ZERO: IsoDuration =
        IsoDuration { years: 0, months: 0, weeks: 0, days: 0, hours: 0, minutes: 0, seconds: 0, millis: 0 };

    /// Parses `PnYnMnWnDTnHnMnS` (e.g. `P1Y2M3DT4H5M6.5S`, `PT10M`, `P2W`, `P0D`).
    ///
    /// Designators are case-insensitive (as in `java.time`); components must appear in that order and at
    /// least one must be present. Only seconds may have a fraction (`.` or `,`), at millisecond precision
    /// (further digits must be zeros). Signs, negative durations and numbers above `u32::MAX` are
    /// rejected.
    pub fn parse(text: &str) -> Result<IsoDuration, TimerError> {
        let invalid = |reason: String| TimerError::InvalidDuration { text: text.to_owned(), reason };
        let body = text.trim();
        if body.is_empty() {
            return Err(invalid("the text is empty (expected e.g. P1D or PT10M)".to_owned()));
        }
        if body.contains('-') {
            return Err(invalid("negative durations are not allowed for timers".to_owned()));
        }
        let Some(rest) = body.strip_prefix(['P', 'p']) else {
            return Err(invalid("it must start with 'P' (e.g. P1D, PT10M)".to_owned()));
        };
        if rest.is_empty() {
            return Err(invalid("no components follow 'P' (e.g. P1D, PT10M)".to_owned()));
        }
        let (date_text, time_text) = match rest.find(['T', 't']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };

        let mut duration = IsoDuration::ZERO;
        let mut last_rank = 0;
        for component in scan_components(date_text).map_err(invalid)? {
            let rank = match component.designator {
                'Y' => 1,
                'M' => 2,
                'W' => 3,
                'D' => 4,
                'H' | 'S' => {
                    return Err(invalid("hours, minutes and seconds must follow 'T' (e.g. PT1H)".to_owned()))
                }
                other => return Err(invalid(unknown_designator(other))),
            };
            check_order(rank, &mut last_rank, component.designator).map_err(invalid)?;
            if component.millis.is_some() {
                return Err(invalid(only_seconds_fraction()));
            }
            let field = match component.designator {
                'Y' => &mut duration.years,
                'M' => &mut duration.months,
                'W' => &mut duration.weeks,
                _ => &mut duration.days,
            };
            *field = component.value;
        }

        if let Some(time_text) = time_text {
            if time_text.is_empty() {
                return Err(invalid(
                    "'T' must be followed by hours, minutes or seconds (e.g. PT10M)".to_owned(),
                ));
            }
            for component in scan_components(time_text).map_err(invalid)? {
                let rank = match component.designator {
                    'H' => 5,
                    'M' => 6,
                    'S' => 7,
                    'Y' | 'W' | 'D' => {
                        return Err(invalid(
                            "years, weeks and days must come before 'T' (e.g. P1DT2H)".to_owned(),
                        ))
                    }
                    other => return Err(invalid(unknown_designator(other))),
                };
                check_order(rank, &mut last_rank, component.designator).map_err(invalid)?;
                match component.designator {
                    'H' | 'M' if component.millis.is_some() => return Err(invalid(only_seconds_fraction())),
                    'H' => duration.hours = component.value,
                    'M' => duration.minutes = component.value,
                    _ => {
                        duration.seconds = component.value;
                        duration.millis = component.millis.unwrap_or(0);
                    }
                }
            }
        }
        Ok(duration)
    }

    /// Adds this duration to `start` with calendar arithmetic: years and months first (clamping to the last
    /// day of the month: 2027-01-31 + P1M = 2027-02-28, 2028-01-31 + P1M = 2028-02-29), then weeks/days as
    /// calendar days in the time zone of `start`, then the time part as exact elapsed time. None on
    /// overflow.
    ///
    /// # Contract
    /// - `P1D` keeps the wall-clock time across a daylight-saving change; `PT24H` is exactly 24 hours.
    /// - When the calendar part lands in a daylight-saving gap, the result is moved forward by the length
    ///   of the gap (02:30 on a day that skips 02:00–03:00 becomes 03:30), as `java.time` does; it is never
    ///   lost.
    /// - When it lands in a repeated (ambiguous) hour, the offset of `start` is kept if it is valid there,
    ///   else the earlier instant is taken.
    pub fn add_to<Tz: TimeZone>(&self, start: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.add_scaled(start, 1)
    }

    /// True when every field is zero (`P0D`, `PT0S`, ...).
    pub fn is_zero(&self) -> bool {
        *self == IsoDuration::ZERO
    }

    /// Adds `factor` times this duration to `start` in one step, so that repeated intervals do not drift
    /// (Jan 31 + 2 × P1M is Mar 31, not Mar 28).
    fn add_scaled<Tz: TimeZone>(&self, start: &DateTime<Tz>, factor: u32) -> Option<DateTime<Tz>> {
        let factor = u64::from(factor);
        let n_months = (u64::from(self.years) * 12 + u64::from(self.months)).checked_mul(factor)?;
        let n_days = (u64::from(self.weeks) * 7 + u64::from(self.days)).checked_mul(factor)?;
        let n_millis = (u64::from(self.hours) * 3_600_000
            + u64::from(self.minutes) * 60_000
            + u64::from(self.seconds) * 1000
            + u64::from(self.millis))
        .checked_mul(factor)?;

        let mut moved = start.clone();
        if n_months > 0 || n_days > 0 {
            let local = start
                .naive_local()
                .checked_add_months(Months::new(u32::try_from(n_months).ok()?))?
                .checked_add_days(Days::new(n_days))?;
            moved = resolve_local(&start.timezone(), &local, &start.offset().fix())?;
        }
        let elapsed = TimeDelta::try_milliseconds(i64::try_from(n_millis).ok()?)?;
        moved.checked_add_signed(elapsed)
    }
}

impl fmt::Display for IsoDuration {
    /// The canonical ISO form: zero fields are left out, `P0D` for the zero duration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("P0D");
        }
        f.write_str("P")?;
        for (value, designator) in
            [(self.years, 'Y'), (self.months, 'M'), (self.weeks, 'W'), (self.days, 'D')]
        {
            if value > 0 {
                write!(f, "{value}{designator}")?;
            }
        }
        if self.hours > 0 || self.minutes > 0 || self.seconds > 0 || self.millis > 0 {
            f.write_str("T")?;
            if self.hours > 0 {
                write!(f, "{}H", self.hours)?;
            }
            if self.minutes > 0 {
                write!(f, "{}M", self.minutes)?;
            }
            // Carry whole seconds out of `millis`, which only a hand-built value can have above 999.
            let total_millis = u64::from(self.seconds) * 1000 + u64::from(self.millis);
            let (seconds, millis) = (total_millis / 1000, total_millis % 1000);
            if millis > 0 {
                let fraction = format!("{millis:03}");
                write!(f, "{seconds}.{}S", fraction.trim_end_matches('0'))?;
            } else if seconds > 0 {
                write!(f, "{seconds}S")?;
            }
        }
        Ok(())
    }
}

/// Splits `1Y2M3.5S` into components; the error is the reason only (the caller adds the text).
fn scan_components(part: &str) -> Result<Vec<Component>, String> {
    let mut components = Vec::new();
    let mut chars = part.char_indices().peekable();
    while let Some(&(begin, first)) = chars.peek() {
        if !first.is_ascii_digit() {
            return Err(if first.is_ascii_alphabetic() {
                format!("expected a number before '{first}'")
            } else {
                format!("unexpected character '{first}'")
            });
        }
        let mut end = begin;
        let mut fraction_at = None;
        while let Some(&(at, c)) = chars.peek() {
            if c.is_ascii_digit() {
                end = at + 1;
            } else if (c == '.' || c == ',') && fraction_at.is_none() {
                fraction_at = Some(at);
                end = at + 1;
            } else {
                break;
            }
            chars.next();
        }
        let number = &part[begin..end];
        let Some((_, designator)) = chars.next() else {
            return Err(format!("the number {number} has no designator (Y, M, W, D, or after 'T': H, M, S)"));
        };
        let (whole, millis) = match fraction_at {
            Some(at) => (&part[begin..at], Some(parse_millis(&part[at + 1..end])?)),
            None => (number, None),
        };
        let value = whole.parse::<u32>().map_err(|_| format!("the number {whole} is too large"))?;
        components.push(Component { value, millis, designator: designator.to_ascii_uppercase() });
    }
    Ok(components)
}

/// Reads the digits after the decimal separator as milliseconds.
fn parse_millis(digits: &str) -> Result<u32, String> {
    if digits.is_empty() {
        return Err("a decimal separator must be followed by digits (e.g. PT1.5S)".to_owned());
    }
    let (kept, rest) = digits.split_at(digits.len().min(3));
    if rest.bytes().any(|b| b != b'0') {
        return Err(format!("the fraction .{digits} is finer than milliseconds"));
    }
    let scale = 10u32.pow(3 - kept.len() as u32);
    kept.parse::<u32>()
        .map(|value| value * scale)
        .map_err(|_| format!("the fraction .{digits} is not a number"))
}

fn check_order(rank: u8, last_rank: &mut u8, designator: char) -> Result<(), String> {
    if rank <= *last_rank {
        return Err(format!(
            "'{designator}' is repeated or out of order (expected the order Y M W D T H M S)"
        ));
    }
    *last_rank = rank;
    Ok(())
}

fn unknown_designator(designator: char) -> String {
    format!("'{designator}' is not a designator (expected Y, M, W, D, or after 'T': H, M, S)")
}

fn only_seconds_fraction() -> String {
    "only seconds may have a fraction (e.g. PT1.5S)".to_owned()
}

/// Maps a local date-time to an instant in `zone`; see the contract of [`IsoDuration::add_to`].
fn resolve_local<Tz: TimeZone>(
    zone: &Tz,
    local: &NaiveDateTime,
    preferred: &FixedOffset,
) -> Option<DateTime<Tz>> {
    match zone.from_local_datetime(local) {
        LocalResult::Single(instant) => Some(instant),
        LocalResult::Ambiguous(earlier, later) => {
            Some(if later.offset().fix() == *preferred { later } else { earlier })
        }
        LocalResult::None => {
            // In a gap: read the local time with the offset in force before the gap, which moves it forward
            // by the gap's length. A day earlier is safely before the transition: offsets and gaps are
            // shorter than a day, and transitions are months apart.
            let before_gap = local.checked_sub_signed(TimeDelta::days(1))?;
            let offset = zone.offset_from_utc_datetime(&before_gap).fix();
            let utc = local.checked_sub_signed(TimeDelta::seconds(i64::from(offset.local_minus_utc())))?;
            Some(zone.from_utc_datetime(&utc))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Date-times
// ---------------------------------------------------------------------------------------------------------

/// A point in time from `timeDate`.
///
/// Accepted forms (seconds and fractional seconds optional, `T` may also be `t` or a space):
/// - with an offset: `2027-01-01T09:00:00Z`, `2027-01-01T09:00:00.250+03:00`, `+0300`, `+03`;
/// - with a zone id, Zeebe's form `2027-03-28T02:30:00@Europe/Berlin`, or Java's form
///   `2027-01-01T09:00:00+01:00[Europe/Paris]` (the offset may be left out: `...T09:00:00[Europe/Paris]`).
///
/// # Contract
/// - A date-time without offset or zone is an error: the engine never guesses a zone.
/// - With a zone and no offset, a local time inside a daylight-saving gap is an error naming it, and an
///   ambiguous local time (the repeated hour when clocks go back) takes the **earlier** instant.
/// - With both an offset and a zone, the offset fixes the instant and must be the zone's offset at that
///   instant (so a summer date written with the winter offset is an error, not a silent one-hour shift).
/// - The result keeps the resolved offset; the zone id itself is not kept.
pub fn parse_date_time(text: &str) -> Result<DateTime<FixedOffset>, TimerError> {
    let trimmed = text.trim();
    let invalid =
        |reason: &str| TimerError::InvalidDateTime { text: text.to_owned(), reason: reason.to_owned() };
    let (rest, zone_name) = split_zone(trimmed);
    let (local_text, offset) = split_offset(rest).map_err(|reason| invalid(&reason))?;
    let local = parse_local(local_text).ok_or_else(|| {
        invalid("expected a date and time such as 2027-01-01T09:00:00Z or 2027-01-01T09:00:00@Africa/Nairobi")
    })?;
    let out_of_range = || invalid("the date is out of range");
    let Some(zone_name) = zone_name else {
        let Some(offset) = offset else {
            return Err(TimerError::MissingZone { text: text.to_owned() });
        };
        return offset.from_local_datetime(&local).single().ok_or_else(out_of_range);
    };
    let zone = chrono_tz::Tz::from_str(zone_name)
        .map_err(|_| TimerError::UnknownZone { text: text.to_owned(), zone: zone_name.to_owned() })?;
    match offset {
        Some(offset) => {
            let instant = offset.from_local_datetime(&local).single().ok_or_else(out_of_range)?;
            let expected = instant.with_timezone(&zone).offset().fix();
            if expected != offset {
                return Err(TimerError::OffsetMismatch {
                    text: text.to_owned(),
                    offset,
                    zone: zone_name.to_owned(),
                    expected,
                });
            }
            Ok(instant)
        }
        None => match zone.from_local_datetime(&local) {
            LocalResult::Single(instant) => Ok(instant.fixed_offset()),
            LocalResult::Ambiguous(earlier, _later) => Ok(earlier.fixed_offset()),
            LocalResult::None => Err(TimerError::NonexistentLocalTime {
                text: text.to_owned(),
                local,
                zone: zone_name.to_owned(),
            }),
        },
    }
}

/// Splits off a trailing `[Zone/Id]` or `@Zone/Id`.
fn split_zone(text: &str) -> (&str, Option<&str>) {
    if let Some(inner) = text.strip_suffix(']') {
        if let Some((rest, zone)) = inner.rsplit_once('[') {
            return (rest, Some(zone.trim()));
        }
    }
    match text.rsplit_once('@') {
        Some((rest, zone)) => (rest.trim_end(), Some(zone.trim())),
        None => (text, None),
    }
}

/// Splits off a trailing `Z` or `±hh[:mm]` offset, searched only after the date so that the date's
/// hyphens are not taken for a sign.
fn split_offset(text: &str) -> Result<(&str, Option<FixedOffset>), String> {
    const DATE_LEN: usize = "2027-01-01".len();
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Ok((local, Some(Utc.fix())));
    }
    let Some(time) = text.get(DATE_LEN..) else {
        return Ok((text, None));
    };
    let Some(sign_at) = time.rfind(['+', '-']) else {
        return Ok((text, None));
    };
    let offset_text = &time[sign_at..];
    let offset = parse_offset(offset_text)
        .ok_or_else(|| format!("'{offset_text}' is not an offset (expected e.g. Z, +03:00 or -05:00)"))?;
    Ok((&text[..DATE_LEN + sign_at], Some(offset)))
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    let (sign, digits) = match text.split_at_checked(1)? {
        ("+", digits) => (1, digits),
        ("-", digits) => (-1, digits),
        _ => return None,
    };
    // Byte arithmetic below is only sound on ASCII (a multibyte character must not be split).
    if !digits.is_ascii() {
        return None;
    }
    let (hours, minutes) = match (digits.len(), digits.split_once(':')) {
        (_, Some((hours, minutes))) => (hours, minutes),
        (4, None) => digits.split_at(2),
        (2, None) => (digits, "00"),
        _ => return None,
    };
    if hours.len() != 2
        || minutes.len() != 2
        || !(hours.bytes().chain(minutes.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let seconds = hours.parse::<i32>().ok()? * 3600 + minutes.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * seconds)
}

fn parse_local(text: &str) -> Option<NaiveDateTime> {
    const DATE_LEN: usize = "2027-01-01".len();
    let (date, time) = (text.get(..DATE_LEN)?, text.get(DATE_LEN + 1..)?);
    if !matches!(text.as_bytes().get(DATE_LEN), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let normalised = format!("{date}T{time}");
    NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M"))
        .ok()
}

// ---------------------------------------------------------------------------------------------------------
// Cycles
// ---------------------------------------------------------------------------------------------------------

/// A repeating cycle from `timeCycle`.
#[allow(clippy::large_enum_variant, reason = "parsed once per timer definition; boxing would change the API")]
#[derive(Debug, Clone)]
pub enum Cycle {
    /// ISO 8601 repeating interval `R[n]/[start/]duration`: `R/P1D` repeats forever, `R5/PT10M` five times,
    /// `R12/2027-01-01T09:00:00Z/P1M` twelve times from a start. The `R/start/end` and `R/duration/end`
    /// forms are rejected, as are `R0` and a zero interval.
    ///
    /// Calendar arithmetic happens in the offset of `start` (a start given with a zone id keeps only its
    /// resolved offset), or in UTC when there is no start; for a wall-clock schedule in a zone that
    /// follows daylight saving, use a cron cycle with `@Zone/Id`.
    Repeating { repetitions: Option<u32>, start: Option<DateTime<FixedOffset>>, interval: IsoDuration },
    /// A cron expression (Spring/Zeebe style, 6 fields with seconds: "0 0 9 * * MON-FRI"; also the classic
    /// 5-field form, read as if prefixed with "0 " for seconds, the 7-field form ending with a year, and
    /// `@yearly`/`@monthly`/`@weekly`/`@daily`/`@hourly`), evaluated in `zone`: UTC unless the text ends
    /// with `@Zone/Id`, e.g. `0 0 9 * * *@Africa/Nairobi` (a space before `@` is allowed).
    ///
    /// Day-of-week numbers follow Spring and Unix cron: `0` and `7` are Sunday, `1` is Monday (so
    /// `1-5` is Monday to Friday, also in the 5-field form); steps follow Spring (`*/2` is MON, WED, FRI,
    /// SUN). Day-of-month and day-of-week must both match when both are restricted. Quartz's `L`, `W` and
    /// `#` are not supported. `expression` is the text as written, without the zone suffix; `schedule` is
    /// its translation for the `cron` crate, which knows no year after 2100.
    Cron { expression: String, schedule: cron::Schedule, zone: chrono_tz::Tz },
}

impl Cycle {
    /// Parses a `timeCycle`: an ISO 8601 repeating interval when the text starts with `R`, else a cron
    /// expression.
    pub fn parse(text: &str) -> Result<Cycle, TimerError> {
        let trimmed = text.trim();
        if trimmed.starts_with(['R', 'r']) {
            parse_repeating(text, trimmed)
        } else if trimmed.starts_with(['P', 'p']) {
            Err(TimerError::InvalidCycle {
                text: text.to_owned(),
                reason: format!("a duration alone does not repeat; write R/{trimmed} to repeat it forever"),
            })
        } else {
            parse_cron(text, trimmed)
        }
    }

    /// The first due time strictly after `after`, given that `fired` repetitions already happened, and
    /// `anchor` = when the timer was created (used when no start is given: first due = anchor + interval).
    /// None when the cycle is exhausted (repetitions reached) or overflow.
    ///
    /// # Contract
    /// - `Repeating` with a start: the due times are `start`, `start + 1×interval`, `start + 2×interval`,
    ///   ... (Zeebe: `R3/2027-01-01T09:00:00Z/P1D` fires Jan 1, 2 and 3 at 09:00). Without a start they
    ///   are `anchor + 1×interval`, `anchor + 2×interval`, ... The k-th due time is computed by adding the
    ///   interval multiplied by k to the base in one step, so month-end schedules do not drift
    ///   (Jan 31 + P1M×2 = Mar 31).
    /// - `Repeating { repetitions: Some(n) }`: None once `fired >= n`, and None when the first due time
    ///   after `after` is not among the first n due times (the schedule's window has passed).
    /// - Catch-up: missed repetitions are skipped, not replayed. After downtime the scheduler fires the
    ///   overdue timer once, then asks for the first due time strictly after now and resumes the schedule —
    ///   no burst.
    /// - `Cron`: the next matching time strictly after `after`, in `zone`, as computed by the `cron` crate.
    ///   Observed around daylight-saving changes (tested below): a time inside a spring-forward gap does
    ///   not exist and is skipped for that day (`0 30 2 * * *@Europe/Berlin` does not fire on 2027-03-28,
    ///   next is 2027-03-29 02:30); a time in the repeated hour at fall-back fires once, at the earlier
    ///   instant (02:30+02:00 on 2027-10-31), and not again at 02:30+01:00; an hourly cron fires at
    ///   02:00+02:00 and next at 03:00+01:00, two hours later. The result is never at or before `after`:
    ///   asked at 02:10+01:00, `0 15 2 * * *` gives 02:15+01:00. No limit on repetitions; None after the
    ///   year 2100.
    pub fn next_after(
        &self,
        anchor: DateTime<Utc>,
        fired: u32,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Cycle::Repeating { repetitions, start, interval } => {
                if repetitions.is_some_and(|n| fired >= n) {
                    return None;
                }
                let index = match start {
                    Some(start) => first_due_index(|k| interval.add_scaled(start, k), after)?,
                    None => first_due_index(|k| interval.add_scaled(&anchor, k.checked_add(1)?), after)?,
                };
                if repetitions.is_some_and(|n| index.0 >= n) {
                    return None;
                }
                Some(index.1)
            }
            Cycle::Cron { schedule, zone, .. } => {
                // The cron crate adds a second to `after` without checking for overflow.
                after.checked_add_signed(TimeDelta::seconds(1))?;
                let after_local = after.with_timezone(zone);
                // The iterator returns both instants of an ambiguous local time, earlier first: skip any
                // that is not strictly after `after`.
                schedule.after(&after_local).find(|due| *due > after_local).map(|due| due.with_timezone(&Utc))
            }
        }
    }
}

/// The smallest index k with `due(k) > after`, and that due time. `due` is non-decreasing and returns
/// None from some index on (overflow), in which case there may be no such k.
fn first_due_index<Tz: TimeZone>(
    due: impl Fn(u32) -> Option<DateTime<Tz>>,
    after: DateTime<Utc>,
) -> Option<(u32, DateTime<Utc>)> {
    let is_past = |k: u32| due(k).map(|t| t.with_timezone(&Utc) <= after);
    // Gallop to a bound, then bisect: `low` is past, `high` is not (due or overflowed).
    if is_past(0) != Some(true) {
        return Some((0, due(0)?.with_timezone(&Utc)));
    }
    let mut low = 0u32;
    let mut high = 1u32;
    while is_past(high) == Some(true) {
        low = high;
        high = high.checked_mul(2)?;
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if is_past(middle) == Some(true) {
            low = middle;
        } else {
            high = middle;
        }
    }
    Some((high, due(high)?.with_timezone(&Utc)))
}

fn parse_repeating(text: &str, trimmed: &str) -> Result<Cycle, TimerError> {
    let invalid = |reason: String| TimerError::InvalidCycle { text: text.to_owned(), reason };
    let expected = "expected R[n]/[start/]duration, e.g. R5/PT10M or R/2027-01-01T09:00:00Z/P1D";
    let Some((count_text, rest)) = trimmed.split_once('/') else {
        return Err(invalid(expected.to_owned()));
    };
    let repetitions = match &count_text[1..] {
        "" => None,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => match digits.parse::<u32>() {
            Ok(0) => {
                return Err(invalid("R0 never fires; the repetition count must be at least 1".to_owned()))
            }
            Ok(n) => Some(n),
            Err(_) => return Err(invalid(format!("the repetition count {digits} is too large"))),
        },
        other => return Err(invalid(format!("'R{other}' is not a repetition count; {expected}"))),
    };
    let (start, interval_text) = if rest.starts_with(['P', 'p']) {
        if rest.contains('/') {
            return Err(invalid(
                "the R/duration/end form is not supported; give R[n]/start/duration".to_owned(),
            ));
        }
        (None, rest)
    } else {
        let Some((start_text, interval_text)) = rest.rsplit_once('/') else {
            return Err(invalid(format!("'{rest}' is not a duration; {expected}")));
        };
        if !interval_text.trim().starts_with(['P', 'p']) {
            return Err(invalid(
                "the R/start/end form is not supported; give R[n]/start/duration".to_owned(),
            ));
        }
        let start = parse_date_time(start_text).map_err(|error| {
            invalid(match error {
                TimerError::MissingZone { .. } => format!(
                    "the start '{start_text}' has no offset or zone; add 'Z', '+03:00' or '@Africa/Nairobi'"
                ),
                other => other.to_string(),
            })
        })?;
        (Some(start), interval_text)
    };
    let interval = IsoDuration::parse(interval_text).map_err(|error| invalid(error.to_string()))?;
    if interval.is_zero() {
        return Err(invalid("the interval must be longer than zero".to_owned()));
    }
    Ok(Cycle::Repeating { repetitions, start, interval })
}

fn parse_cron(text: &str, trimmed: &str) -> Result<Cycle, TimerError> {
    let invalid = |reason: String| TimerError::InvalidCron { text: text.to_owned(), reason };
    let (expression, zone) = match trimmed.rsplit_once('@') {
        Some((expression, zone_name)) if !expression.trim().is_empty() => {
            let zone = chrono_tz::Tz::from_str(zone_name.trim()).map_err(|_| TimerError::UnknownZone {
                text: text.to_owned(),
                zone: zone_name.trim().to_owned(),
            })?;
            (expression.trim(), zone)
        }
        _ => (trimmed, chrono_tz::Tz::UTC),
    };
    if expression.is_empty() {
        return Err(invalid("the expression is empty (expected e.g. 0 0 9 * * MON-FRI)".to_owned()));
    }
    let shorthand = expression.starts_with('@');
    let user_fields: Vec<&str> = if shorthand { Vec::new() } else { expression.split_whitespace().collect() };
    // Where the user's fields sit among the six or seven the `cron` crate reads.
    let mut first_field = 0;
    let normalised = if shorthand {
        expression.to_owned()
    } else {
        let mut fields: Vec<String> = user_fields.iter().map(|field| (*field).to_owned()).collect();
        match fields.len() {
            5 => {
                fields.insert(0, "0".to_owned());
                first_field = 1;
            }
            6 | 7 => {}
            n => {
                let plural = if n == 1 { "" } else { "s" };
                return Err(invalid(format!(
                    "it has {n} field{plural}; expected 6 (second minute hour day-of-month month day-of-week), \
                     5 (without seconds) or 7 (with a year)"
                )));
            }
        }
        fields[5] = spring_days_of_week(&fields[5]).map_err(invalid)?;
        fields.join(" ")
    };
    let schedule = cron::Schedule::from_str(&normalised).map_err(|error| {
        let field_at = |index: usize| Some((index, *user_fields.get(index.checked_sub(first_field)?)?));
        invalid(cron_error_reason(&error.to_string(), &normalised, field_at))
    })?;
    Ok(Cycle::Cron { expression: expression.to_owned(), schedule, zone })
}

/// Rewrites an error of the `cron` crate (the expression, a caret line, then maybe a message) as one line
/// naming the field the caret points at, as the user wrote it (the crate sees the normalised text).
fn cron_error_reason<'a>(
    message: &str,
    normalised: &str,
    field_at: impl Fn(usize) -> Option<(usize, &'a str)>,
) -> String {
    const FIELD_NAMES: [&str; 7] =
        ["second", "minute", "hour", "day-of-month", "month", "day-of-week", "year"];
    let mut lines = message.lines().skip(1);
    let caret = lines.next().and_then(|line| line.find('^'));
    let detail = lines.map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ");
    let field = caret.and_then(|caret| {
        let starts_field = |&(at, c): &(usize, char)| {
            !c.is_whitespace() && normalised[..at].chars().next_back().is_none_or(char::is_whitespace)
        };
        let n_started =
            normalised.char_indices().take_while(|(at, _)| *at <= caret).filter(starts_field).count();
        field_at(n_started.checked_sub(1)?)
    });
    match (field, detail.is_empty()) {
        (Some((index, text)), _) => {
            let name = FIELD_NAMES.get(index).copied().unwrap_or("extra");
            let range = if name == "year" { " (years 1970 to 2100)" } else { "" };
            if detail.is_empty() {
                format!("the {name} field '{text}' is not valid{range}")
            } else {
                format!("the {name} field '{text}' is not valid{range}: {detail}")
            }
        }
        (None, false) => detail,
        (None, true) => {
            "expected 6 fields such as 0 0 9 * * MON-FRI, or @yearly, @monthly, @weekly, @daily, @hourly"
                .to_owned()
        }
    }
}

/// Translates a Spring day-of-week field (MON=1 .. SUN=7, and 0 = SUN) into the `cron` crate's numbering
/// (SUN=1 .. SAT=7), as an explicit list so that ranges and steps keep Spring's meaning.
fn spring_days_of_week(field: &str) -> Result<String, String> {
    const NAMES: [&str; 7] = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    if field.contains(['L', 'l', '#']) {
        return Err(format!("day of week '{field}': Quartz's 'L' and '#' forms are not supported"));
    }
    let day = |item: &str| -> Result<u32, String> {
        if let Some(at) = NAMES.iter().position(|name| name.eq_ignore_ascii_case(item)) {
            return Ok(at as u32 + 1);
        }
        match item.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!("day of week '{item}' is not MON..SUN or 0..7 (0 and 7 are Sunday)")),
        }
    };
    let mut days = [false; 8];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<usize>() {
                Ok(step) if step > 0 => (range, Some(step)),
                _ => return Err(format!("day of week '{item}': the step must be a positive number")),
            },
            None => (item, None),
        };
        let (first, last) = match (range, range.split_once('-')) {
            ("*", _) => (1, 7),
            (_, Some((first, last))) => {
                // As in Spring, Sunday at the start of a range means 0: SUN-SAT is the whole week.
                let first = match day(first)? {
                    7 => 0,
                    first => first,
                };
                (first, day(last)?)
            }
            (single, None) => {
                let single = day(single)?;
                (single, if step.is_some() { 7 } else { single })
            }
        };
        if first > last {
            return Err(format!("day of week '{item}': the range goes backwards"));
        }
        for n in (first..=last).step_by(step.unwrap_or(1)) {
            days[n as usize] = true;
        }
    }
    // Spring's 0 and 7 are both Sunday; the crate counts SUN=1, MON=2 .. SAT=7.
    days[7] |= days[0];
    let mut crate_days: Vec<u32> = (1..=7u32).filter(|&n| days[n as usize]).map(|n| n % 7 + 1).collect();
    if crate_days.len() == 7 {
        return Ok("*".to_owned());
    }
    crate_days.sort_unstable();
    Ok(crate_days.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

impl fmt::Display for Cycle {
    /// The cycle in the form [`Cycle::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cycle::Repeating { repetitions, start, interval } => {
                f.write_str("R")?;
                if let Some(n) = repetitions {
                    write!(f, "{n}")?;
                }
                if let Some(start) = start {
                    write!(f, "/{}", start.to_rfc3339())?;
                }
                write!(f, "/{interval}")
            }
            Cycle::Cron { expression, zone, .. } if *zone == chrono_tz::Tz::UTC => f.write_str(expression),
            Cycle::Cron { expression, zone, .. } => write!(f, "{expression}@{zone}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn berlin(local: &str) -> DateTime<chrono_tz::Tz> {
        let local = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").unwrap();
        chrono_tz::Europe::Berlin.from_local_datetime(&local).single().unwrap()
    }

    fn duration(years: u32, months: u32, weeks: u32, days: u32, hms: [u32; 3], millis: u32) -> IsoDuration {
        let [hours, minutes, seconds] = hms;
        IsoDuration { years, months, weeks, days, hours, minutes, seconds, millis }
    }

    /// The first `n` due times of a cycle, each asked for strictly after the previous one.
    fn fires(cycle: &Cycle, anchor: DateTime<Utc>, n: usize) -> Vec<String> {
        let mut due_times = Vec::new();
        let mut after = anchor;
        for fired in 0..n {
            match cycle.next_after(anchor, fired as u32, after) {
                Some(due) => {
                    due_times.push(due.to_rfc3339());
                    after = due;
                }
                None => break,
            }
        }
        due_times
    }

    #[test]
    fn multibyte_offsets_are_errors_not_panics() {
        assert!(parse_date_time("2027-01-01T09:00:00+\u{20ac}1").is_err());
        assert!(parse_date_time("2027-01-01T09:00:00+\u{e9}\u{e9}").is_err());
    }

    #[test]
    fn valid_durations() {
        let cases = [
            ("P1Y2M3DT4H5M6.5S", duration(1, 2, 0, 3, [4, 5, 6], 500), "P1Y2M3DT4H5M6.5S"),
            ("PT10M", duration(0, 0, 0, 0, [0, 10, 0], 0), "PT10M"),
            ("P2W", duration(0, 0, 2, 0, [0, 0, 0], 0), "P2W"),
            ("P0D", IsoDuration::ZERO, "P0D"),
            ("PT0S", IsoDuration::ZERO, "P0D"),
            ("P1M", duration(0, 1, 0, 0, [0, 0, 0], 0), "P1M"),
            ("PT1M", duration(0, 0, 0, 0, [0, 1, 0], 0), "PT1M"),
            ("PT90M", duration(0, 0, 0, 0, [0, 90, 0], 0), "PT90M"),
            ("PT0.05S", duration(0, 0, 0, 0, [0, 0, 0], 50), "PT0.05S"),
            ("PT1,250S", duration(0, 0, 0, 0, [0, 0, 1], 250), "PT1.25S"),
            ("PT2.500000S", duration(0, 0, 0, 0, [0, 0, 2], 500), "PT2.5S"),
            ("p1dt2h", duration(0, 0, 0, 1, [2, 0, 0], 0), "P1DT2H"),
            ("  P3D\n", duration(0, 0, 0, 3, [0, 0, 0], 0), "P3D"),
            ("P1W2D", duration(0, 0, 1, 2, [0, 0, 0], 0), "P1W2D"),
            ("PT4294967295S", duration(0, 0, 0, 0, [0, 0, u32::MAX], 0), "PT4294967295S"),
        ];
        for (text, expected, display) in cases {
            let parsed = IsoDuration::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), display, "{text}");
            assert_eq!(IsoDuration::parse(&parsed.to_string()), Ok(parsed), "round trip of {text}");
        }
        // A hand-built value may carry whole seconds in `millis`; the display stays valid ISO.
        assert_eq!(duration(0, 0, 0, 0, [0, 0, 1], 1500).to_string(), "PT2.5S");
    }

    #[test]
    fn invalid_durations_say_why() {
        let cases = [
            ("", "empty"),
            ("P", "no components follow 'P'"),
            ("PT", "'T' must be followed by hours"),
            ("P1DT", "'T' must be followed by hours"),
            ("1D", "must start with 'P'"),
            ("P1H", "hours, minutes and seconds must follow 'T' (e.g. PT1H)"),
            ("P1S", "must follow 'T'"),
            ("PT1D", "must come before 'T'"),
            ("-P1D", "negative"),
            ("P-1D", "negative"),
            ("P1X", "'X' is not a designator"),
            ("P1", "has no designator"),
            ("PD", "expected a number before 'D'"),
            ("P1D1Y", "out of order"),
            ("P1D2D", "repeated or out of order"),
            ("P1.5D", "only seconds may have a fraction"),
            ("PT1.5M", "only seconds may have a fraction"),
            ("PT1.S", "must be followed by digits"),
            ("PT0.0001S", "finer than milliseconds"),
            ("P4294967296D", "too large"),
            ("P1D ago", "unexpected character ' '"),
            ("P1DΩ", "unexpected character 'Ω'"),
            ("hello", "must start with 'P'"),
        ];
        for (text, key_words) in cases {
            let error = IsoDuration::parse(text).expect_err(text);
            let message = error.to_string();
            assert!(matches!(error, TimerError::InvalidDuration { .. }), "{text}: {error:?}");
            assert!(message.contains(key_words), "{text}: {message}");
            assert!(message.starts_with(&format!("'{text}' is not an ISO 8601 duration: ")), "{message}");
        }
        assert_eq!(
            IsoDuration::parse("P1H").unwrap_err().to_string(),
            "'P1H' is not an ISO 8601 duration: hours, minutes and seconds must follow 'T' (e.g. PT1H)"
        );
    }

    #[test]
    fn is_zero() {
        assert!(IsoDuration::parse("P0D").unwrap().is_zero());
        assert!(IsoDuration::parse("P0Y0M0DT0H0M0.000S").unwrap().is_zero());
        assert!(!IsoDuration::parse("PT0.001S").unwrap().is_zero());
        assert!(!IsoDuration::parse("P1W").unwrap().is_zero());
    }

    #[test]
    fn calendar_arithmetic_in_utc() {
        let cases = [
            ("2027-01-31T10:00:00Z", "P1M", "2027-02-28T10:00:00+00:00"),
            ("2028-01-31T10:00:00Z", "P1M", "2028-02-29T10:00:00+00:00"),
            ("2028-02-29T00:00:00Z", "P1Y", "2029-02-28T00:00:00+00:00"),
            ("2027-03-31T00:00:00Z", "P1M", "2027-04-30T00:00:00+00:00"),
            ("2027-01-31T00:00:00Z", "P1M1D", "2027-03-01T00:00:00+00:00"),
            ("2027-12-31T23:00:00Z", "PT1H30M", "2028-01-01T00:30:00+00:00"),
            ("2027-01-01T00:00:00Z", "P1Y2M3W4DT5H6M7.008S", "2028-03-26T05:06:07.008+00:00"),
            ("2027-01-01T00:00:00Z", "P0D", "2027-01-01T00:00:00+00:00"),
        ];
        for (start, text, expected) in cases {
            let sum = IsoDuration::parse(text).unwrap().add_to(&utc(start)).unwrap();
            assert_eq!(sum.to_rfc3339(), expected, "{start} + {text}");
        }
    }

    #[test]
    fn calendar_arithmetic_in_a_fixed_offset_uses_its_dates() {
        // In UTC this start is Jan 30, so the month must be added to the local date, not the UTC one.
        let start = DateTime::parse_from_rfc3339("2027-01-31T00:00:00+03:00").unwrap();
        let sum = IsoDuration::parse("P1M").unwrap().add_to(&start).unwrap();
        assert_eq!(sum.to_rfc3339(), "2027-02-28T00:00:00+03:00");
    }

    #[test]
    fn days_keep_wall_clock_time_across_dst_but_hours_do_not() {
        let cases = [
            // Spring forward on 2027-03-28 (02:00 -> 03:00).
            ("2027-03-27T09:00:00", "P1D", "2027-03-28T09:00:00+02:00"),
            ("2027-03-27T09:00:00", "PT24H", "2027-03-28T10:00:00+02:00"),
            ("2027-03-21T09:00:00", "P1W", "2027-03-28T09:00:00+02:00"),
            // Fall back on 2027-10-31 (03:00 -> 02:00).
            ("2027-10-30T09:00:00", "P1D", "2027-10-31T09:00:00+01:00"),
            ("2027-10-30T09:00:00", "PT24H", "2027-10-31T08:00:00+01:00"),
            ("2027-02-28T09:00:00", "P1M", "2027-03-28T09:00:00+02:00"),
            // Landing in the gap moves forward by the gap; landing in the repeated hour keeps the offset.
            ("2027-03-27T02:30:00", "P1D", "2027-03-28T03:30:00+02:00"),
            ("2027-10-30T02:30:00", "P1D", "2027-10-31T02:30:00+02:00"),
            ("2027-03-27T02:30:00", "P1DT1H", "2027-03-28T04:30:00+02:00"),
        ];
        for (local, text, expected) in cases {
            let sum = IsoDuration::parse(text).unwrap().add_to(&berlin(local)).unwrap();
            assert_eq!(sum.to_rfc3339(), expected, "{local} Europe/Berlin + {text}");
        }
    }

    #[test]
    fn time_part_alone_never_reinterprets_the_start_instant() {
        // 02:30+01:00 on 2027-10-31 is the later of two 02:30s; PT10M must be exactly 10 minutes later.
        let start = utc("2027-10-31T01:30:00Z").with_timezone(&chrono_tz::Europe::Berlin);
        let sum = IsoDuration::parse("PT10M").unwrap().add_to(&start).unwrap();
        assert_eq!(sum.with_timezone(&Utc), utc("2027-10-31T01:40:00Z"));
    }

    #[test]
    fn arithmetic_overflow_is_none() {
        let huge = IsoDuration::parse("P4294967295Y").unwrap();
        assert_eq!(huge.add_to(&utc("2027-01-01T00:00:00Z")), None);
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(IsoDuration::parse("PT1S").unwrap().add_to(&far), None);
        assert_eq!(IsoDuration::parse("P1D").unwrap().add_to(&far), None);
    }

    #[test]
    fn date_time_forms() {
        let cases = [
            ("2027-01-01T09:00:00Z", "2027-01-01T09:00:00+00:00"),
            ("2027-01-01T09:00:00+03:00", "2027-01-01T09:00:00+03:00"),
            ("2027-01-01T09:00:00-0530", "2027-01-01T09:00:00-05:30"),
            ("2027-01-01T09:00:00+03", "2027-01-01T09:00:00+03:00"),
            ("2027-01-01T09:00:00.250Z", "2027-01-01T09:00:00.250+00:00"),
            ("2027-01-01T09:00:00.123456789+01:00", "2027-01-01T09:00:00.123456789+01:00"),
            ("2027-01-01T09:00Z", "2027-01-01T09:00:00+00:00"),
            ("2027-01-01 09:00:00z", "2027-01-01T09:00:00+00:00"),
            (" 2027-01-01T09:00:00Z\n", "2027-01-01T09:00:00+00:00"),
            ("2027-01-01T09:00:00@Africa/Nairobi", "2027-01-01T09:00:00+03:00"),
            ("2027-07-01T09:00:00@Europe/Berlin", "2027-07-01T09:00:00+02:00"),
            ("2027-01-01T09:00:00+01:00[Europe/Paris]", "2027-01-01T09:00:00+01:00"),
            ("2027-07-01T09:00:00[Europe/Paris]", "2027-07-01T09:00:00+02:00"),
            ("2027-01-01T09:00:00.5@UTC", "2027-01-01T09:00:00.500+00:00"),
            // Ambiguous local time (repeated hour): the earlier instant.
            ("2027-10-31T02:30:00@Europe/Berlin", "2027-10-31T02:30:00+02:00"),
            // ... unless the offset says which one.
            ("2027-10-31T02:30:00+01:00[Europe/Berlin]", "2027-10-31T02:30:00+01:00"),
        ];
        for (text, expected) in cases {
            let parsed = parse_date_time(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.to_rfc3339(), expected, "{text}");
        }
    }

    #[test]
    fn invalid_date_times_say_why() {
        assert_eq!(
            parse_date_time("2027-01-01T09:00:00").unwrap_err().to_string(),
            "timeDate '2027-01-01T09:00:00' has no offset or zone; add 'Z', '+03:00' or '@Africa/Nairobi'"
        );
        let cases = [
            (
                "2027-03-28T02:30:00@Europe/Berlin",
                "local time 2027-03-28 02:30:00 does not exist in Europe/Berlin",
            ),
            ("2027-01-01T09:00:00@Europe/Berln", "unknown time zone 'Europe/Berln'"),
            ("2027-01-01T09:00:00[]", "unknown time zone ''"),
            ("2027-07-01T09:00:00+01:00[Europe/Paris]", "offset +01:00 is not the offset of Europe/Paris"),
            ("2027-01-01T09:00:00+3:00", "'+3:00' is not an offset"),
            ("2027-13-01T09:00:00Z", "not an ISO 8601 date-time"),
            ("2027-01-01", "not an ISO 8601 date-time"),
            ("tomorrow", "not an ISO 8601 date-time"),
            ("", "not an ISO 8601 date-time"),
            ("2027-01-01T25:00:00Z", "not an ISO 8601 date-time"),
        ];
        for (text, key_words) in cases {
            let message = parse_date_time(text).expect_err(text).to_string();
            assert!(message.contains(key_words), "{text}: {message}");
            assert!(message.contains(&format!("'{text}'")), "{text}: {message}");
        }
    }

    #[test]
    fn repeating_cycle_with_a_count_fires_that_many_times() {
        let cycle = Cycle::parse("R5/PT10M").unwrap();
        let anchor = utc("2027-01-01T09:00:00Z");
        assert_eq!(
            fires(&cycle, anchor, 10),
            [
                "2027-01-01T09:10:00+00:00",
                "2027-01-01T09:20:00+00:00",
                "2027-01-01T09:30:00+00:00",
                "2027-01-01T09:40:00+00:00",
                "2027-01-01T09:50:00+00:00",
            ]
        );
        assert_eq!(cycle.next_after(anchor, 5, anchor), None, "exhausted by the fired count");
        assert_eq!(cycle.next_after(anchor, 4, utc("2027-01-01T09:50:00Z")), None, "window passed");
    }

    #[test]
    fn unbounded_repeating_cycle_never_ends() {
        let cycle = Cycle::parse("R/P1D").unwrap();
        let anchor = utc("2027-01-01T09:00:00Z");
        assert_eq!(
            fires(&cycle, anchor, 3),
            ["2027-01-02T09:00:00+00:00", "2027-01-03T09:00:00+00:00", "2027-01-04T09:00:00+00:00"]
        );
        let later = utc("2127-06-15T12:00:00Z");
        assert_eq!(cycle.next_after(anchor, u32::MAX, later), Some(utc("2127-06-16T09:00:00Z")));
    }

    #[test]
    fn repeating_cycle_with_a_start_fires_at_the_start_first() {
        let cycle = Cycle::parse("R3/2027-01-01T09:00:00Z/P1D").unwrap();
        let anchor = utc("2026-12-01T00:00:00Z");
        assert_eq!(
            fires(&cycle, anchor, 5),
            ["2027-01-01T09:00:00+00:00", "2027-01-02T09:00:00+00:00", "2027-01-03T09:00:00+00:00"]
        );
    }

    #[test]
    fn monthly_cycle_on_the_first() {
        let cycle = Cycle::parse("R12/2027-01-01T09:00:00Z/P1M").unwrap();
        let due_times = fires(&cycle, utc("2026-12-15T00:00:00Z"), 20);
        assert_eq!(due_times.len(), 12);
        for (month, due) in due_times.iter().enumerate() {
            assert_eq!(*due, format!("2027-{:02}-01T09:00:00+00:00", month + 1));
        }
    }

    #[test]
    fn month_end_cycle_does_not_drift() {
        let cycle = Cycle::parse("R/2027-01-31T00:00:00Z/P1M").unwrap();
        assert_eq!(
            fires(&cycle, utc("2027-01-31T00:00:00Z"), 4),
            [
                "2027-02-28T00:00:00+00:00",
                "2027-03-31T00:00:00+00:00",
                "2027-04-30T00:00:00+00:00",
                "2027-05-31T00:00:00+00:00",
            ]
        );
    }

    #[test]
    fn catch_up_skips_missed_repetitions() {
        let anchor = utc("2027-01-01T09:00:00Z");
        let cases = [
            ("R/PT10M", "2027-01-01T12:34:00Z", 1, Some("2027-01-01T12:40:00Z")),
            ("R/PT10M", "2027-01-01T12:40:00Z", 1, Some("2027-01-01T12:50:00Z")),
            ("R/P1D", "2031-05-05T08:00:00Z", 3, Some("2031-05-05T09:00:00Z")),
            ("R/2027-01-31T00:00:00Z/P1M", "2030-02-10T00:00:00Z", 1, Some("2030-02-28T00:00:00Z")),
            ("R/2027-01-31T00:00:00Z/P1M", "2030-02-28T00:00:00Z", 1, Some("2030-03-31T00:00:00Z")),
            ("R10/PT10M", "2027-01-01T10:15:00Z", 2, Some("2027-01-01T10:20:00Z")),
            ("R10/PT10M", "2027-01-01T10:40:00Z", 2, None),
        ];
        for (text, after, fired, expected) in cases {
            let cycle = Cycle::parse(text).unwrap();
            let due = cycle.next_after(anchor, fired, utc(after));
            assert_eq!(due, expected.map(utc), "{text} after {after}");
        }
    }

    #[test]
    fn repeating_cycle_overflow_is_none() {
        let cycle = Cycle::parse("R/P1000Y").unwrap();
        assert_eq!(cycle.next_after(utc("2027-01-01T00:00:00Z"), 0, DateTime::<Utc>::MAX_UTC), None);
    }

    #[test]
    fn invalid_repeating_cycles_say_why() {
        let cases = [
            ("R", "expected R[n]/[start/]duration"),
            ("R5", "expected R[n]/[start/]duration"),
            ("Rx/PT1M", "'Rx' is not a repetition count"),
            ("R-1/PT1M", "'R-1' is not a repetition count"),
            ("R0/PT1M", "at least 1"),
            ("R99999999999/PT1M", "too large"),
            ("R/PT0S", "longer than zero"),
            ("R/P1H", "hours, minutes and seconds must follow 'T'"),
            ("R/PT1M/2027-01-01T09:00:00Z", "R/duration/end form is not supported"),
            ("R/2027-01-01T09:00:00Z/2027-02-01T09:00:00Z", "R/start/end form is not supported"),
            ("R/2027-01-01T09:00:00/P1D", "the start '2027-01-01T09:00:00' has no offset or zone"),
            ("R/2027-01-01T09:00:00@Mars/Base/P1D", "unknown time zone 'Mars/Base'"),
            ("R/2027-01-01T09:00:00Z", "not a duration"),
            ("PT1H", "write R/PT1H to repeat it forever"),
        ];
        for (text, key_words) in cases {
            let error = Cycle::parse(text).expect_err(text);
            let message = error.to_string();
            assert!(matches!(error, TimerError::InvalidCycle { .. }), "{text}: {error:?}");
            assert!(message.contains(key_words), "{text}: {message}");
            assert!(message.starts_with(&format!("'{text}' is not a timer cycle")), "{message}");
        }
    }

    #[test]
    fn start_with_a_zone_id_keeps_its_offset() {
        let cycle = Cycle::parse("R2/2027-01-01T09:00:00@Europe/Berlin/P1D").unwrap();
        assert_eq!(
            fires(&cycle, utc("2026-12-01T00:00:00Z"), 3),
            ["2027-01-01T08:00:00+00:00", "2027-01-02T08:00:00+00:00"]
        );
    }

    #[test]
    fn cron_forms() {
        let after = utc("2027-01-01T10:00:00Z"); // a Friday
        let cases = [
            ("0 0 9 * * MON-FRI", "2027-01-04T09:00:00Z"),
            ("0 0 9 * * 1-5", "2027-01-04T09:00:00Z"),
            ("0 9 * * 1-5", "2027-01-04T09:00:00Z"),
            ("0 9 * * *", "2027-01-02T09:00:00Z"),
            ("*/15 * * * *", "2027-01-01T10:15:00Z"),
            ("30 0 9 * * *", "2027-01-02T09:00:30Z"),
            ("0 0 9 * * * 2028", "2028-01-01T09:00:00Z"),
            ("0 0 9 * * SUN", "2027-01-03T09:00:00Z"),
            ("0 0 9 * * 0", "2027-01-03T09:00:00Z"),
            ("0 0 9 * * 7", "2027-01-03T09:00:00Z"),
            ("0 0 9 * * sat,sun", "2027-01-02T09:00:00Z"),
            ("0 0 9 * * SUN-SAT", "2027-01-02T09:00:00Z"),
            ("0 0 9 * * 5-7", "2027-01-02T09:00:00Z"),
            ("0 0 9 ? * 2", "2027-01-05T09:00:00Z"),
            ("0 0 9 * * */2", "2027-01-03T09:00:00Z"), // Spring: MON, WED, FRI, SUN
            ("0 0 9 * * 2/2", "2027-01-02T09:00:00Z"), // Spring: TUE, THU, SAT
            ("0 0 9 1 * *", "2027-02-01T09:00:00Z"),
            ("@daily", "2027-01-02T00:00:00Z"),
            ("0 0 9 * * *@Africa/Nairobi", "2027-01-02T06:00:00Z"),
            ("0 0 14 * * * @Africa/Nairobi", "2027-01-01T11:00:00Z"),
            ("@hourly@Asia/Kolkata", "2027-01-01T10:30:00Z"),
            ("  0 0 9 * * MON-FRI  ", "2027-01-04T09:00:00Z"),
        ];
        for (text, expected) in cases {
            let cycle = Cycle::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let due = cycle.next_after(after, 0, after);
            assert_eq!(due, Some(utc(expected)), "{text}");
        }
    }

    #[test]
    fn cron_fires_every_weekday() {
        let cycle = Cycle::parse("0 0 9 * * MON-FRI@Africa/Nairobi").unwrap();
        assert_eq!(
            fires(&cycle, utc("2027-01-01T10:00:00Z"), 3),
            ["2027-01-04T06:00:00+00:00", "2027-01-05T06:00:00+00:00", "2027-01-06T06:00:00+00:00"]
        );
    }

    #[test]
    fn cron_around_dst_changes_as_observed() {
        let cycle = Cycle::parse("0 30 2 * * *@Europe/Berlin").unwrap();
        // Spring forward: 02:30 does not exist on 2027-03-28, so that day is skipped.
        assert_eq!(
            fires(&cycle, utc("2027-03-26T12:00:00Z"), 3),
            ["2027-03-27T01:30:00+00:00", "2027-03-29T00:30:00+00:00", "2027-03-30T00:30:00+00:00"]
        );
        // Fall back: 02:30 happens twice on 2027-10-31; only the earlier one (+02:00) fires.
        assert_eq!(
            fires(&cycle, utc("2027-10-29T12:00:00Z"), 3),
            ["2027-10-30T00:30:00+00:00", "2027-10-31T00:30:00+00:00", "2027-11-01T01:30:00+00:00"]
        );
        // Asked from inside the repeated hour after the first 02:30 (at 02:45+02:00): the wall clock is past
        // 02:30, so the second 02:30 is skipped too.
        assert_eq!(
            cycle.next_after(utc("2027-10-31T00:00:00Z"), 0, utc("2027-10-31T00:45:00Z")),
            Some(utc("2027-11-01T01:30:00Z"))
        );
        // Asked in the second pass of the hour, before its 02:15 (at 02:10+01:00): the crate proposes the
        // first 02:15 (already past); the second one is returned, never a time at or before `after`.
        let quarter = Cycle::parse("0 15 2 * * *@Europe/Berlin").unwrap();
        assert_eq!(
            quarter.next_after(utc("2027-10-31T00:00:00Z"), 0, utc("2027-10-31T01:10:00Z")),
            Some(utc("2027-10-31T01:15:00Z"))
        );
        // Hourly at fall back: 01:00, 02:00 (+02:00), then 03:00 (+01:00), two hours later.
        let hourly = Cycle::parse("0 0 * * * *@Europe/Berlin").unwrap();
        assert_eq!(
            fires(&hourly, utc("2027-10-30T22:30:00Z"), 3),
            ["2027-10-30T23:00:00+00:00", "2027-10-31T00:00:00+00:00", "2027-10-31T02:00:00+00:00"]
        );
    }

    #[test]
    fn cron_ignores_fired_and_stops_after_2100() {
        let cycle = Cycle::parse("0 0 0 1 1 *").unwrap();
        let anchor = utc("2027-01-01T00:00:00Z");
        assert_eq!(cycle.next_after(anchor, u32::MAX, anchor), Some(utc("2028-01-01T00:00:00Z")));
        assert_eq!(cycle.next_after(anchor, 0, utc("2100-01-01T00:00:00Z")), None);
        assert_eq!(cycle.next_after(anchor, 0, DateTime::<Utc>::MAX_UTC), None);
    }

    #[test]
    fn invalid_cron_names_the_expression() {
        let cases = [
            ("0 0 9 * *  * * *", "it has 8 fields"),
            ("0 9 *", "it has 3 fields"),
            ("0 0 25 * * *", "the hour field '25' is not valid: Hours must be"),
            ("0 25 * * *", "the hour field '25' is not valid"),
            ("0 0 9 * JAN-XYZ *", "the month field 'JAN-XYZ' is not valid: 'XYZ' is not a valid month name"),
            ("0 0 9 * * * 2200", "the year field '2200' is not valid (years 1970 to 2100)"),
            ("0 0 9 * * MON-XYZ", "'XYZ' is not MON..SUN"),
            ("0 0 9 * * 8", "'8' is not MON..SUN"),
            ("0 0 9 * * FRI-MON", "goes backwards"),
            ("0 0 9 * * 1/0", "positive number"),
            ("0 0 9 * * 5L", "'L' and '#' forms are not supported"),
            ("0 0 9 * * MON#2", "'L' and '#' forms are not supported"),
            ("0 0 9 L * *", "the day-of-month field 'L' is not valid"),
            ("@", "@yearly, @monthly"),
            ("@often", "@yearly, @monthly"),
            ("every day", "it has 2 fields"),
            ("daily", "it has 1 field;"),
        ];
        for (text, key_words) in cases {
            let error = Cycle::parse(text).expect_err(text);
            let message = error.to_string();
            assert!(matches!(error, TimerError::InvalidCron { .. }), "{text}: {error:?}");
            assert!(message.contains(key_words), "{text}: {message}");
            assert!(message.starts_with(&format!("'{text}' is not a valid cron expression")), "{message}");
        }
        let zone_error = Cycle::parse("0 0 9 * * *@Mars/Base").unwrap_err();
        assert!(zone_error.to_string().contains("unknown time zone 'Mars/Base'"), "{zone_error}");
    }

    #[test]
    fn cycles_display_as_they_parse() {
        for text in [
            "R5/PT10M",
            "R/P1D",
            "R12/2027-01-01T09:00:00+00:00/P1M",
            "R/2027-01-31T00:00:00+03:00/P1M",
            "0 0 9 * * MON-FRI",
            "0 9 * * 1-5@Africa/Nairobi",
        ] {
            let cycle = Cycle::parse(text).unwrap();
            assert_eq!(cycle.to_string(), text);
            assert_eq!(Cycle::parse(&cycle.to_string()).unwrap().to_string(), text);
        }
    }
}
