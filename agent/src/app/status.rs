//! `status`: what the agent knows, from local files only (no network), as aligned lines for
//! people, as JSON for tools, or as a Jamf Pro extension attribute.
//!
//! `state` is one of `not_enrolled`, `enrolled`, `renewal_due`, `expired`, `revoked`,
//! `error`. `origins` lists every origin the browsers are told to present the certificate to
//! (the cert-auth domain, then the CA's protected origins) with its entry per browser;
//! `skippedOrigins` the protected origins that failed the origin check and were written nowhere. A state that cannot be read is reported as `error` with the reason rather than
//! failing, so that an inventory run always records something.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app::{Agent, AgentError, error_chain, rfc3339, target_of};
use crate::autoselect;
use crate::decision::schedule;
use crate::decision::{CaVerdict, CertFacts};

/// The overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum State {
    /// No identity.
    NotEnrolled,
    /// An identity, not yet due for renewal.
    Enrolled,
    /// An identity due for renewal.
    RenewalDue,
    /// The certificate is past its notAfter.
    Expired,
    /// The CA revoked the certificate.
    Revoked,
    /// The local state cannot be read.
    Error,
}

impl State {
    /// The wire name.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Self::NotEnrolled => "not_enrolled",
            Self::Enrolled => "enrolled",
            Self::RenewalDue => "renewal_due",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Error => "error",
        }
    }
}

/// The certificate in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CertificateReport {
    /// Serial number, lowercase hex.
    pub serial_number: String,
    /// Subject CN.
    pub subject: Option<String>,
    /// Issuer CN.
    pub issuer: Option<String>,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_remaining: i64,
}

/// Renewal timing and the last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RenewalReport {
    /// When renewal is due.
    pub due_at: Option<String>,
    /// The local time (`HH:MM`) of the daily run, the device's slot: a renewal that is due
    /// but not urgent waits for it.
    pub daily_run: String,
    /// The last enrollment or renewal attempt.
    pub last_attempt: Option<String>,
    /// What went wrong last, if the last attempt failed.
    pub last_error: Option<String>,
    /// No automatic attempt before this time.
    pub next_attempt: Option<String>,
}

/// The CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct CaReport {
    /// The configured CA URL.
    pub url: Option<String>,
}

/// One browser's setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct BrowserReport {
    /// Our setting or identity is in place.
    pub present: bool,
    /// It is managed policy.
    pub managed: bool,
    /// Whether the browser is installed, when that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<bool>,
    /// Where, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One origin the browsers are told to present the certificate to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OriginReport {
    /// The origin, in canonical form (the pattern written).
    pub origin: String,
    /// Whether our entry is in place in every browser that is told per origin.
    pub in_place: bool,
    /// Its entry in each such browser: `present`, `present_with_other_filter` (another entry
    /// for the origin wins) or `absent`.
    pub browsers: BTreeMap<String, autoselect::Status>,
}

/// A protected origin that failed the origin check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct SkippedOriginReport {
    /// The value the CA published.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// The identity store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoreReport {
    /// `files`, `keychain`, ...
    pub kind: String,
    /// Where.
    pub location: String,
    /// A current identity is present.
    pub identity: bool,
    /// An interrupted enrollment or renewal left a key.
    pub pending_key: bool,
    /// Backend-specific facts.
    #[serde(flatten)]
    pub details: BTreeMap<String, String>,
    /// Why the state could not be read, for `state: error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything `status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct StatusReport {
    /// The overall state.
    pub state: State,
    /// The certificate, when there is one.
    pub certificate: Option<CertificateReport>,
    /// Renewal.
    pub renewal: RenewalReport,
    /// The CA.
    pub ca: CaReport,
    /// Each browser's setting, by name.
    pub browsers: BTreeMap<String, BrowserReport>,
    /// Each origin and its entry per browser, the cert-auth domain first; empty until the CA's
    /// metadata is cached.
    pub origins: Vec<OriginReport>,
    /// The protected origins that were not written, with why.
    #[serde(rename = "skippedOrigins")]
    pub skipped_origins: Vec<SkippedOriginReport>,
    /// The identity store.
    pub store: StoreReport,
    /// The scheduled run (plain output only; not part of the JSON contract).
    #[serde(skip)]
    pub schedule: Option<String>,
    /// The device as the CA's admin looks it up: UDID and serial number (plain output only).
    #[serde(skip)]
    pub device: Option<String>,
    /// After a revocation made the agent uninstall: which certificate and when (plain output
    /// only).
    #[serde(skip)]
    pub revoked: Option<String>,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Aligned lines.
    Plain,
    /// JSON.
    Json,
    /// `<result>...</result>`.
    JamfEa,
}

/// Collects the report.
pub(super) fn gather(agent: &Agent) -> StatusReport {
    let now = agent.platform.clock.now();
    let description = agent.platform.store.describe();
    let mut report = StatusReport {
        state: State::NotEnrolled,
        certificate: None,
        renewal: RenewalReport {
            due_at: None,
            daily_run: agent.device_slot(None).time_of_day().format("%H:%M").to_string(),
            last_attempt: None,
            last_error: None,
            next_attempt: None,
        },
        ca: CaReport { url: agent.config.config.ca_url.clone() },
        browsers: BTreeMap::new(),
        origins: Vec::new(),
        skipped_origins: Vec::new(),
        store: StoreReport {
            kind: description.kind,
            location: description.location,
            identity: false,
            pending_key: false,
            details: description.details,
            error: None,
        },
        schedule: agent.platform.scheduler.status().ok().map(|s| s.detail),
        device: match (agent.device_udid(), agent.device_serial()) {
            (Ok(udid), Ok(serial)) => Some(format!("UDID {udid}, serial {serial}")),
            (Ok(udid), Err(_)) => Some(format!("UDID {udid}, serial unknown")),
            (Err(e), _) => Some(format!("unknown ({})", error_chain(&e))),
        },
        revoked: None,
    };
    if let Err(e) = fill(agent, now, &mut report) {
        report.state = State::Error;
        report.store.error = Some(error_chain(&e));
    }
    report
}

fn fill(agent: &Agent, now: DateTime<Utc>, report: &mut StatusReport) -> Result<(), AgentError> {
    let state = agent.state.load()?;
    report.renewal.last_attempt = state.backoff.last_attempt.map(rfc3339);
    report.renewal.last_error = state.backoff.last_error.clone();
    report.renewal.next_attempt = state.backoff.waiting_until(now).map(rfc3339);

    let snapshot = agent.platform.store.snapshot()?;
    report.store.pending_key = snapshot.pending_key;
    if let Some(cached) = agent.state.load_metadata()?
        && let Ok(target) = target_of(&cached.metadata)
        && let Ok(wanted) = target.wanted()
        && let Ok(statuses) = agent.platform.browsers.status(&target)
    {
        report.origins = origin_reports(&wanted, &statuses);
        report.skipped_origins = wanted
            .skipped
            .iter()
            .map(|e| SkippedOriginReport { value: e.value.clone(), reason: e.problem.to_string() })
            .collect();
        for s in statuses {
            report.browsers.insert(
                s.browser,
                BrowserReport {
                    present: s.present,
                    managed: s.managed,
                    installed: s.installed,
                    detail: s.detail,
                },
            );
        }
    }
    let current = if snapshot.current { agent.current()? } else { None };
    let Some(current) = current else {
        report.state = if state.revoked.is_some() { State::Revoked } else { State::NotEnrolled };
        report.revoked = state.revoked.as_ref().map(|r| {
            format!(
                "certificate {} revoked by the CA; everything was uninstalled at {}; enroll again with a token",
                r.serial_number,
                rfc3339(r.uninstalled_at)
            )
        });
        return Ok(());
    };
    report.store.identity = true;
    let info = &current.info;
    let facts = CertFacts { not_before: info.not_before(), not_after: info.not_after() };
    let slot = agent.device_slot(Some(&current));
    let due = schedule::renewal_due(
        &facts,
        agent.config.renew_before()?,
        slot,
        agent.platform.clock.utc_offset(now),
    );
    report.renewal.due_at = Some(rfc3339(due));
    report.renewal.daily_run = slot.time_of_day().format("%H:%M").to_string();
    report.certificate = Some(CertificateReport {
        serial_number: info.serial_number().to_owned(),
        subject: info.subject_cn().map(str::to_owned),
        issuer: info.issuer_cn().map(str::to_owned),
        not_before: rfc3339(info.not_before()),
        not_after: rfc3339(info.not_after()),
        days_remaining: (info.not_after() - now).num_days(),
    });
    report.state = if state.verdict_for(info.serial_number()) == CaVerdict::Revoked {
        State::Revoked
    } else if now >= info.not_after() {
        State::Expired
    } else if now >= due {
        State::RenewalDue
    } else {
        State::Enrolled
    };
    Ok(())
}

/// Each wanted origin with its entry in every browser that reports per-origin entries.
pub(super) fn origin_reports(
    wanted: &autoselect::Wanted,
    statuses: &[crate::platform::BrowserStatus],
) -> Vec<OriginReport> {
    wanted
        .entries
        .iter()
        .map(|entry| {
            // A browser that is not installed presents nothing anywhere: it neither counts
            // against an origin nor for it.
            let browsers: BTreeMap<String, autoselect::Status> = statuses
                .iter()
                .filter(|s| s.installed != Some(false))
                .filter_map(|s| {
                    let found = s.origins.iter().find(|o| o.origin == entry.pattern())?;
                    Some((s.browser.clone(), found.entry))
                })
                .collect();
            let in_place =
                !browsers.is_empty() && browsers.values().all(|s| *s == autoselect::Status::Present);
            OriginReport { origin: entry.pattern().to_owned(), in_place, browsers }
        })
        .collect()
}

/// `, origins N/M` for the Jamf extension attribute (N of M origins in place everywhere), or
/// nothing when no browser reports per-origin entries.
fn origins_suffix(report: &StatusReport) -> String {
    if report.origins.iter().all(|o| o.browsers.is_empty()) {
        return String::new();
    }
    let in_place = report.origins.iter().filter(|o| o.in_place).count();
    format!(", origins {in_place}/{}", report.origins.len())
}

/// Prints `report` in `format`.
pub(super) fn render(report: &StatusReport, format: Format, out: &mut dyn Write) -> Result<(), AgentError> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(report).map_err(std::io::Error::from)?;
            writeln!(out, "{text}")?;
        }
        Format::JamfEa => match &report.certificate {
            Some(cert) => {
                let day = cert.not_after.get(..10).unwrap_or(&cert.not_after);
                writeln!(
                    out,
                    "<result>{}, expires {day}{}</result>",
                    report.state.as_str(),
                    origins_suffix(report)
                )?;
            }
            None => writeln!(out, "<result>{}</result>", report.state.as_str())?,
        },
        Format::Plain => {
            let lines = plain_lines(report);
            let width = lines.iter().map(|(label, _)| label.len() + 1).max().unwrap_or(0);
            for (label, value) in lines {
                writeln!(out, "{:<width$} {value}", format!("{label}:"))?;
            }
        }
    }
    Ok(())
}

/// What puts a browser setting in place: the per-user one is `install`'s; a managed one
/// (system-wide policy) is `install --system`'s as root on Linux, and the MDM's profile on a
/// Mac, where the agent writes no system-wide setting.
pub(super) fn browser_fix(managed: bool) -> &'static str {
    match (managed, cfg!(target_os = "macos")) {
        (false, _) => "`devicetrust-agent install` puts it in place",
        (true, false) => "`sudo devicetrust-agent install --system` puts it in place",
        (true, true) => "the MDM's profile from `devicetrust-agent profile browsers` puts it in place",
    }
}

fn plain_lines(report: &StatusReport) -> Vec<(String, String)> {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_owned());
    let mut lines = vec![("State".to_owned(), report.state.as_str().to_owned())];
    if let Some(device) = &report.device {
        lines.push(("Device".to_owned(), device.clone()));
    }
    if let Some(e) = &report.store.error {
        lines.push(("Error".to_owned(), e.clone()));
    }
    if let Some(cert) = &report.certificate {
        lines.push(("Serial".to_owned(), cert.serial_number.clone()));
        lines.push(("Subject".to_owned(), or(&cert.subject, "-")));
        lines.push(("Issuer".to_owned(), or(&cert.issuer, "-")));
        lines.push(("Valid from".to_owned(), cert.not_before.clone()));
        lines.push((
            "Valid until".to_owned(),
            format!("{} ({} days left)", cert.not_after, cert.days_remaining),
        ));
    }
    lines.push(("Renewal due".to_owned(), or(&report.renewal.due_at, "-")));
    lines.push(("Daily run".to_owned(), format!("{} local time", report.renewal.daily_run)));
    if let Some(revoked) = &report.revoked {
        lines.push(("Revoked".to_owned(), revoked.clone()));
    }
    if report.revoked.is_none() || report.renewal.last_attempt.is_some() {
        lines.push(("Last attempt".to_owned(), or(&report.renewal.last_attempt, "never")));
    }
    lines.push(("Last error".to_owned(), or(&report.renewal.last_error, "none")));
    // Only when one is planned: a backoff's end, not a placeholder.
    if let Some(next) = &report.renewal.next_attempt {
        lines.push(("Next attempt".to_owned(), next.clone()));
    }
    lines.push(("CA".to_owned(), or(&report.ca.url, "not configured")));
    // What puts a missing setting back, once there is an identity to point at.
    let enrolled = !matches!(report.state, State::NotEnrolled | State::Revoked);
    for (name, b) in &report.browsers {
        if b.installed == Some(false) {
            // Nothing to fix: a setting for it is harmless and is used once it is installed.
            let setting = if b.present { "; its setting is in place for when it is" } else { "" };
            lines.push((format!("Browser {name}"), format!("not installed{setting}")));
            continue;
        }
        let mut value = String::from(if b.present { "in place" } else { "not in place" });
        if b.managed {
            value.push_str(", managed");
        }
        if let Some(detail) = &b.detail {
            value.push_str(&format!(" ({detail})"));
        }
        if !b.present && enrolled {
            value.push_str(&format!("; {}", browser_fix(b.managed)));
        }
        lines.push((format!("Browser {name}"), value));
    }
    for origin in &report.origins {
        let value = if origin.browsers.is_empty() {
            "no browser reports it".to_owned()
        } else {
            let parts: Vec<String> = origin
                .browsers
                .iter()
                .map(|(name, status)| {
                    let state = match status {
                        autoselect::Status::Present => "in place",
                        autoselect::Status::PresentWithOtherFilter => "another entry wins",
                        autoselect::Status::Absent => "missing",
                    };
                    format!("{name} {state}")
                })
                .collect();
            parts.join(", ")
        };
        // One short label, so that long origins do not push every value to the right.
        lines.push(("Origin".to_owned(), format!("{} ({value})", origin.origin)));
    }
    for skipped in &report.skipped_origins {
        lines.push(("Skipped origin".to_owned(), format!("{:?}: {}", skipped.value, skipped.reason)));
    }
    let mut store = format!("{} at {}", report.store.kind, report.store.location);
    if report.store.pending_key {
        store.push_str(" (an interrupted enrollment or renewal left a key; the next run finishes it)");
    }
    lines.push(("Store".to_owned(), store));
    for (k, v) in &report.store.details {
        lines.push((format!("Store {k}"), v.clone()));
    }
    lines.push(("Schedule".to_owned(), or(&report.schedule, "unknown")));
    lines
}
