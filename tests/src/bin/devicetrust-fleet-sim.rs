//! `devicetrust-fleet-sim`: a fleet of devices over simulated days, renewing by the agent's
//! own decision core, to show when the CA sees the renewals.
//!
//! Every device enrolls on one day (`--enroll-date`, at a random time of its working day),
//! then lives `--days` simulated days. A device model says when each Mac is awake and when
//! the agent runs; at every run the simulator asks [`agent::decision::decide_at`] (with the
//! same inputs the agent's `run` gathers, the CA answering instantly and always saying
//! "good") and, when it says renew, issues a new certificate at that instant. Nothing here
//! decides when a renewal is due: that is the core's alone, and the daily run's time of day
//! comes from the core's schedule too.
//!
//! # The device model
//!
//! - Time zones: 15% UTC−8, 35% UTC−5, 10% UTC, 25% UTC+1, 10% UTC+5:30, 5% UTC+9 (fixed
//!   offsets: daylight saving time is not modelled).
//! - A workday (Monday to Friday, local): the Mac wakes at the owner's usual start (normal
//!   around 09:00, σ 40 min, between 07:00 and 11:30) give or take 15 minutes, and sleeps
//!   at the usual end (normal around 17:30, σ 45 min) give or take 20 minutes; on 30% of
//!   workdays the lid is closed for 30 to 90 minutes in between (a meeting). 2% of workdays
//!   are sick days (asleep all day). A weekend day is awake for an hour between 10:00 and
//!   20:00 with a probability of 8%.
//! - Absences: half the devices take one holiday of one to three weeks, 5% are off for four
//!   to eight weeks once, at a random time of the year.
//! - 1% of devices are awake one hour a week only (a random workday and hour).
//! - A morning start is a login (the agent's `RunAtLoad` run, or the user manager starting
//!   the service on Linux) with a probability of 20%, else a wake from sleep.
//! - The daily run (launchd's `StartCalendarInterval`, systemd's `OnCalendar=`, both at the
//!   minute of the device's [`Slot`]) fires at its time when the Mac is awake; one missed
//!   while the Mac slept fires on wake (launchd coalesces missed events into one; a systemd
//!   calendar timer elapsed during suspend fires once on resume, and `Persistent=` covers
//!   power-off). macOS and Linux install the same two triggers, so one model serves both.
//!
//! # What it prints
//!
//! Renewals per UTC hour for the days of the renewal wave (a row per day, 24 columns),
//! renewals per day, the peak hour over the mean working hour, and how many certificates
//! expired before renewal (split by whether the device was awake at least an hour in every
//! week). The mean working hour is the fleet's devices over 40, the working hours (Monday to
//! Friday, 09:00–16:59 local) of the one week every device's renewal is meant to spread
//! over: it does not depend on the rules measured. Because the fleet works in several time
//! zones, the share of it at work in a UTC hour (weighed by the minutes of that hour) is
//! below one; an even spread gives that hour the mean working hour times the share. The
//! simulator names the hour furthest above its even share, among the hours when at least a
//! tenth of the fleet is at work, the stricter figure.
//!
//! It writes an SVG plot of renewals per hour (`--plot`).

use std::path::PathBuf;

use agent::decision::{
    self, BackoffState, CaVerdict, CertFacts, Decision, Inputs, Intent, LocalIdentity, Slot,
};
use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Utc, Weekday};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, Normal};

/// Simulates a fleet renewing with the agent's decision core.
#[derive(Debug, Parser)]
#[command(name = "devicetrust-fleet-sim")]
struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 100_000)]
    devices: u32,
    /// Simulated days from the enrollment day (at least 2).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(2..))]
    days: u32,
    /// The day every device enrolls (local date in each device's time zone).
    #[arg(long, default_value = "2027-01-05")]
    enroll_date: NaiveDate,
    /// Certificate lifetime in days (the CA's `certificate_lifetime_days`). The report reads
    /// one renewal wave: keep `--days` under twice the lifetime.
    #[arg(long, default_value_t = 365)]
    lifetime_days: i64,
    /// The agent's `renew_before_days`.
    #[arg(long, default_value_t = 30)]
    renew_before_days: i64,
    /// Seed of the device model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the SVG plot of renewals per hour.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// (offset from UTC in minutes, share of the fleet in percent).
const TIME_ZONES: [(i64, u32); 6] = [(-480, 15), (-300, 35), (0, 10), (60, 25), (330, 10), (540, 5)];

/// One device's habits, drawn once.
#[derive(Debug, Clone)]
struct Habits {
    udid: String,
    /// Offset from UTC, seconds.
    utc_offset: i64,
    /// Usual wake and sleep, seconds after local midnight.
    start: f64,
    end: f64,
    /// Days (from the enrollment day) of an absence: `[from, to)`.
    absences: Vec<(i64, i64)>,
    /// Awake one hour a week only: (weekday from Monday, hour).
    weekly_hour: Option<(u32, i64)>,
}

/// One awake interval, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
struct Awake {
    from: i64,
    to: i64,
    /// The interval starts with a login (not a wake from sleep).
    login: bool,
}

/// What one worker counted.
#[derive(Debug, Clone)]
struct Tally {
    /// Renewals per UTC hour since the first simulated UTC midnight.
    per_hour: Vec<u32>,
    /// Certificates that reached their end without a renewal: (device awake an hour every week, not).
    expired: (u64, u64),
    /// Devices awake at least an hour in every week.
    weekly_devices: u64,
    /// Calls of the decision core.
    decisions: u64,
    /// Working minutes per UTC hour, summed over the devices.
    working: Vec<u64>,
}

impl Tally {
    fn new(hours: usize) -> Self {
        Self {
            per_hour: vec![0; hours],
            expired: (0, 0),
            weekly_devices: 0,
            decisions: 0,
            working: vec![0; hours],
        }
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.per_hour.iter_mut().zip(&other.per_hour) {
            *a += b;
        }
        for (a, b) in self.working.iter_mut().zip(&other.working) {
            *a += b;
        }
        self.expired.0 += other.expired.0;
        self.expired.1 += other.expired.1;
        self.weekly_devices += other.weekly_devices;
        self.decisions += other.decisions;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = std::time::Instant::now();
    // UTC midnight of the day before the enrollment date: every time zone's day 0 starts after it.
    let origin = args.enroll_date.and_time(NaiveTime::MIN).and_utc().timestamp() - DAY;
    let hours = usize::try_from((i64::from(args.days) + 2) * 24).context("too many days")?;

    let threads = args.threads.max(1);
    let tally = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let args = &args;
                scope.spawn(move || {
                    let mut tally = Tally::new(hours);
                    let mut device = worker as u32;
                    while device < args.devices {
                        simulate(args, device, origin, &mut tally);
                        device += threads as u32;
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::new(hours);
        for worker in workers {
            total.merge(&worker.join().expect("a worker panicked"));
        }
        total
    });
    let elapsed = started.elapsed();
    report(&args, origin, &tally, elapsed)
}

fn habits(args: &Args, device: u32, rng: &mut StdRng) -> Habits {
    let mut pick = rng.random_range(0..100);
    let mut utc_offset = 0;
    for (minutes, share) in TIME_ZONES {
        if pick < share {
            utc_offset = minutes * MINUTE;
            break;
        }
        pick -= share;
    }
    let start = Normal::new(9.0_f64 * 3600.0, 40.0 * 60.0)
        .expect("valid")
        .sample(rng)
        .clamp(7.0 * 3600.0, 11.5 * 3600.0);
    let end = Normal::new(17.5_f64 * 3600.0, 45.0 * 60.0)
        .expect("valid")
        .sample(rng)
        .clamp(start + 4.0 * 3600.0, 21.0 * 3600.0);
    let days = i64::from(args.days);
    let mut absences = Vec::new();
    if rng.random_bool(0.5) {
        let from = rng.random_range(1..days);
        absences.push((from, from + 7 * rng.random_range(1..=3)));
    }
    if rng.random_bool(0.05) {
        let from = rng.random_range(1..days);
        absences.push((from, from + 7 * rng.random_range(4..=8)));
    }
    let weekly_hour = rng.random_bool(0.01).then(|| (rng.random_range(0..5), rng.random_range(9..17)));
    Habits {
        // A UDID-shaped name: the core derives the device's offset from it.
        udid: format!("{:08X}-0000-4000-8000-{:012X}", device, u64::from(device).wrapping_mul(0x9E37_79B9)),
        utc_offset,
        start,
        end,
        absences,
        weekly_hour,
    }
}

/// The awake intervals of simulated day `day` (0 = the enrollment day), in time order.
fn awake_on(h: &Habits, day: i64, date: NaiveDate, rng: &mut StdRng, out: &mut Vec<Awake>) {
    out.clear();
    let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp() - h.utc_offset;
    let weekday = date.weekday();
    let workday = !matches!(weekday, Weekday::Sat | Weekday::Sun);
    if day == 0 {
        // Rollout day: every device is awake through its working day.
        out.push(Awake { from: midnight + h.start as i64, to: midnight + h.end as i64, login: true });
        return;
    }
    if h.absences.iter().any(|&(from, to)| (from..to).contains(&day)) {
        return;
    }
    if let Some((weekday_index, hour)) = h.weekly_hour {
        if weekday.num_days_from_monday() == weekday_index {
            let from = midnight + hour * HOUR;
            out.push(Awake { from, to: from + HOUR, login: rng.random_bool(0.2) });
        }
        return;
    }
    if !workday {
        if rng.random_bool(0.08) {
            let from = midnight + rng.random_range(10..20) * HOUR;
            out.push(Awake { from, to: from + HOUR, login: rng.random_bool(0.2) });
        }
        return;
    }
    if rng.random_bool(0.02) {
        return;
    }
    let wake = midnight + (h.start + rng.random_range(-900.0..900.0)) as i64;
    let sleep = midnight + (h.end + rng.random_range(-1200.0..1200.0)) as i64;
    let login = rng.random_bool(0.2);
    if rng.random_bool(0.3) {
        let gap = rng.random_range(30..=90) * MINUTE;
        let span = (sleep - wake - gap).max(1);
        let at = wake + rng.random_range(0..span);
        out.push(Awake { from: wake, to: at, login });
        out.push(Awake { from: at + gap, to: sleep, login: false });
    } else {
        out.push(Awake { from: wake, to: sleep, login });
    }
}

fn simulate(args: &Args, device: u32, origin: i64, tally: &mut Tally) {
    let mut rng = StdRng::seed_from_u64(args.seed ^ (u64::from(device) << 20) ^ 0x5EED);
    let h = habits(args, device, &mut rng);
    let slot = Slot::for_device(&h.udid);
    let daily_minute = i64::from(slot.daily_minute());
    let utc_offset =
        i32::try_from(h.utc_offset).ok().and_then(FixedOffset::east_opt).expect("a valid offset");
    let lifetime = TimeDelta::days(args.lifetime_days);
    let base = Inputs {
        identity: LocalIdentity::None,
        ca: CaVerdict::Good,
        intent: Intent::Run,
        token_given: false,
        renew_before: TimeDelta::days(args.renew_before_days),
        slot,
        utc_offset,
        backoff: BackoffState::default(),
        mdm: decision::MdmEnrollment::Unknown,
    };
    let at = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).expect("in range");
    let hour_of = |t: i64| usize::try_from((t - origin) / HOUR).ok();

    let mut awake = Vec::with_capacity(2);
    let mut cert: Option<CertFacts> = None;
    let mut last_asleep_from = i64::MIN;
    let mut week_minutes = 0_i64;
    let mut every_week = true;
    let mut expired = 0;
    for day in 0..i64::from(args.days) {
        let date = args.enroll_date + TimeDelta::days(day);
        let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp() - h.utc_offset;
        if date.weekday() == Weekday::Mon && day > 0 {
            every_week &= week_minutes >= 60;
            week_minutes = 0;
        }
        if !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
            // 09:00–17:00 local, by the minutes of each UTC hour it covers (a half-hour
            // offset covers two hours in part).
            let (from, to) = (midnight + 9 * HOUR, midnight + 17 * HOUR);
            let mut t = from;
            while t < to {
                let hour_end = origin + ((t - origin) / HOUR + 1) * HOUR;
                let end = hour_end.min(to);
                if let Some(slot) = hour_of(t).and_then(|hour| tally.working.get_mut(hour)) {
                    *slot += u64::try_from((end - t) / MINUTE).unwrap_or(0);
                }
                t = end;
            }
        }
        awake_on(&h, day, date, &mut rng, &mut awake);
        // The daily triggers of yesterday, today and tomorrow cover every interval of today.
        let triggers: [i64; 3] =
            std::array::from_fn(|i| midnight + (i as i64 - 1) * DAY + daily_minute * MINUTE);
        for span in &awake {
            week_minutes += (span.to - span.from) / MINUTE;
            let mut runs: Vec<i64> = Vec::with_capacity(3);
            let missed = triggers.iter().any(|&t| t > last_asleep_from && t < span.from);
            if span.login || missed {
                runs.push(span.from);
            }
            runs.extend(triggers.iter().copied().filter(|&t| t >= span.from && t < span.to));
            last_asleep_from = span.to;
            for t in runs {
                let Some(current) = cert else {
                    // Day 0: the Jamf policy enrolls at a random moment of the working day.
                    let enrolled = rng.random_range(span.from..span.to);
                    cert = Some(CertFacts { not_before: at(enrolled), not_after: at(enrolled) + lifetime });
                    break;
                };
                tally.decisions += 1;
                let inputs = Inputs { identity: LocalIdentity::Enrolled(current), ..base.clone() };
                match decision::decide_at(&inputs, at(t)) {
                    Decision::Renew(_) => {
                        if let Some(hour) = hour_of(t) {
                            tally.per_hour[hour] += 1;
                        }
                        cert = Some(CertFacts { not_before: at(t), not_after: at(t) + lifetime });
                    }
                    Decision::Expired { .. } => {
                        // Counted once; the admin re-enrolls it on the spot.
                        expired += 1;
                        cert = Some(CertFacts { not_before: at(t), not_after: at(t) + lifetime });
                    }
                    _ => {}
                }
            }
        }
    }
    // The last, partial week counts as a week too; and a certificate that ended with no run
    // after it has expired as well.
    every_week &= week_minutes >= 60;
    let end = origin + DAY + i64::from(args.days) * DAY;
    if cert.is_some_and(|c| c.not_after <= at(end)) {
        expired += 1;
    }
    if every_week {
        tally.weekly_devices += 1;
        tally.expired.0 += expired;
    } else {
        tally.expired.1 += expired;
    }
}

fn report(args: &Args, origin: i64, tally: &Tally, elapsed: std::time::Duration) -> anyhow::Result<()> {
    let total: u64 = tally.per_hour.iter().map(|&n| u64::from(n)).sum();
    println!(
        "devices {}  days {}  enrolled {}  lifetime {} d  renew_before {} d  seed {}",
        args.devices, args.days, args.enroll_date, args.lifetime_days, args.renew_before_days, args.seed
    );
    println!(
        "decisions {}  renewals {}  simulated in {:.1} s",
        tally.decisions,
        total,
        elapsed.as_secs_f64()
    );
    if total == 0 {
        println!("no renewals");
        return Ok(());
    }
    // The wave: the days that hold the middle 90% of the renewals.
    let quantile = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        tally.per_hour.iter().position(|&n| {
            seen += u64::from(n);
            seen >= want.max(1)
        })
    };
    let first = quantile(0.05).unwrap_or(0) / 24 * 24;
    let last = (quantile(0.95).unwrap_or(0) / 24 + 1) * 24;
    let wave = &tally.per_hour[first..last];
    let in_wave: u64 = wave.iter().map(|&n| u64::from(n)).sum();
    // Every device renews once in a wave: an even spread over its week's 40 working hours.
    let mean_working_hour = f64::from(args.devices) / 40.0;
    let (peak_index, peak) =
        wave.iter().enumerate().max_by_key(|&(_, n)| *n).map(|(i, n)| (i, *n)).unwrap_or((0, 0));
    let time =
        |hour: usize| DateTime::<Utc>::from_timestamp(origin + hour as i64 * HOUR, 0).expect("in range");

    println!("\nrenewals per UTC hour, the days of the wave (middle 90%):");
    print!("{:<14}", "day (UTC)");
    for hour in 0..24 {
        print!("{hour:>6}");
    }
    println!("{:>8}", "day");
    for day in wave.chunks(24).enumerate() {
        let (index, hours) = day;
        let date = time(first + index * 24);
        print!("{:<14}", date.format("%a %Y-%m-%d"));
        for n in hours {
            print!("{n:>6}");
        }
        println!("{:>8}", hours.iter().sum::<u32>());
    }
    let outside = total - in_wave;
    println!("\nrenewals outside those days: {outside}");
    println!("renewals per day, every day with any:");
    for (index, hours) in tally.per_hour.chunks(24).enumerate() {
        let n: u32 = hours.iter().sum();
        if n > 0 {
            print!("{} {n}  ", time(index * 24).format("%m-%d"));
        }
    }
    println!();
    println!(
        "\npeak hour: {} UTC with {peak} renewals; mean working hour {:.0}; peak / mean working hour = {:.2}",
        time(first + peak_index).format("%a %Y-%m-%d %H:00"),
        mean_working_hour,
        f64::from(peak) / mean_working_hour
    );
    // The hour furthest above its share of an even spread, among the hours when at least a
    // tenth of the fleet is at work (the edges of the working day carry a few devices only).
    let share = |h: usize| tally.working[first + h] as f64 / 60.0 / f64::from(args.devices);
    if let Some((h, over)) = (0..wave.len())
        .filter(|&h| share(h) >= 0.1)
        .map(|h| (h, f64::from(wave[h]) / (mean_working_hour * share(h))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        println!(
            "furthest above an even spread: {} UTC, {} renewals where an even spread gives {:.0} ({:.2} times)",
            time(first + h).format("%a %Y-%m-%d %H:00"),
            wave[h],
            mean_working_hour * share(h),
            over
        );
    }
    println!(
        "expired before renewal: {} of the {} devices awake at least an hour every week, {} of the {} others",
        tally.expired.0,
        tally.weekly_devices,
        tally.expired.1,
        u64::from(args.devices) - tally.weekly_devices
    );
    if let Some(path) = &args.plot {
        plot(path, args, first, wave, &tally.working[first..last], mean_working_hour, &time)
            .with_context(|| format!("could not write the plot {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

fn plot(
    path: &std::path::Path,
    args: &Args,
    first: usize,
    wave: &[u32],
    working: &[u64],
    mean_working_hour: f64,
    time: &dyn Fn(usize) -> DateTime<Utc>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = f64::from(wave.iter().copied().max().unwrap_or(1)).max(mean_working_hour * 1.6);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("renewals per UTC hour: {} devices enrolled {}", args.devices, args.enroll_date),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..wave.len(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(wave.len() / 24 + 1)
        .x_label_formatter(&|h| time(first + h).format("%a %m-%d").to_string())
        .y_desc("renewals per hour")
        .y_label_formatter(&|n| format!("{n:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    // The even spread: the mean working hour times the share of the fleet at work that hour.
    let even = working
        .iter()
        .enumerate()
        .map(|(h, &n)| (h, mean_working_hour * n as f64 / 60.0 / f64::from(args.devices)));
    chart
        .draw_series(AreaSeries::new(even, 0.0, RGBColor(200, 220, 240).mix(0.6)))?
        .label("an even spread over the fleet's working hours")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], RGBColor(200, 220, 240).filled()));
    chart
        .draw_series(LineSeries::new(
            wave.iter().enumerate().map(|(h, &n)| (h, f64::from(n))),
            RGBColor(200, 40, 40),
        ))?
        .label("renewals")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(200, 40, 40)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}
