//! `status`: what the agent knows, from local files only (no network), as aligned lines for
//! people, as JSON for tools, or as a Jamf Pro extension attribute.
//!
//! `state` is one of `not_enrolled`, `enrolled`, `renewal_due`, `expired`, `revoked`,
//! `error`. A state that cannot be read is reported as `error` with the reason rather than
//! failing, so that an inventory run always records something.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::commands::{Agent, AgentError, error_chain, rfc3339, target_of};
use crate::core::schedule;
use crate::core::{CaVerdict, CertFacts};

/// The overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
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
    pub const fn as_str(self) -> &'static str {
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
pub struct CertificateReport {
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
pub struct RenewalReport {
    /// When renewal is due.
    pub due_at: Option<String>,
    /// The last enrollment or renewal attempt.
    pub last_attempt: Option<String>,
    /// What went wrong last, if the last attempt failed.
    pub last_error: Option<String>,
    /// No automatic attempt before this time.
    pub next_attempt: Option<String>,
}

/// The CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaReport {
    /// The configured CA URL.
    pub url: Option<String>,
}

/// One browser's setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrowserReport {
    /// Our setting or identity is in place.
    pub present: bool,
    /// It is managed policy.
    pub managed: bool,
    /// Where, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The identity store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
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
pub struct StatusReport {
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
    /// The identity store.
    pub store: StoreReport,
    /// The scheduled run (plain output only; not part of the JSON contract).
    #[serde(skip)]
    pub schedule: Option<String>,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned lines.
    Plain,
    /// JSON.
    Json,
    /// `<result>...</result>`.
    JamfEa,
}

/// Collects the report.
pub fn gather(agent: &Agent) -> StatusReport {
    let now = agent.platform.clock.now();
    let description = agent.platform.store.describe();
    let mut report = StatusReport {
        state: State::NotEnrolled,
        certificate: None,
        renewal: RenewalReport { due_at: None, last_attempt: None, last_error: None, next_attempt: None },
        ca: CaReport { url: agent.config.config.ca_url.clone() },
        browsers: BTreeMap::new(),
        store: StoreReport {
            kind: description.kind,
            location: description.location,
            identity: false,
            pending_key: false,
            details: description.details,
            error: None,
        },
        schedule: agent.platform.scheduler.status().ok().map(|s| s.detail),
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
        && let Ok(statuses) = agent.platform.browsers.status(&target)
    {
        for s in statuses {
            report.browsers.insert(
                s.browser,
                BrowserReport { present: s.present, managed: s.managed, detail: s.detail },
            );
        }
    }
    let current = if snapshot.current { agent.current()? } else { None };
    let Some(current) = current else {
        report.state = if state.revoked.is_some() { State::Revoked } else { State::NotEnrolled };
        return Ok(());
    };
    report.store.identity = true;
    let info = &current.info;
    let facts = CertFacts { not_before: info.not_before(), not_after: info.not_after() };
    let due =
        schedule::renewal_due(&facts, agent.config.renew_before()?, agent.device_offset(Some(&current)));
    report.renewal.due_at = Some(rfc3339(due));
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

/// Prints `report` in `format`.
pub fn render(report: &StatusReport, format: Format, out: &mut dyn Write) -> Result<(), AgentError> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(report).map_err(std::io::Error::from)?;
            writeln!(out, "{text}")?;
        }
        Format::JamfEa => match &report.certificate {
            Some(cert) => {
                let day = cert.not_after.get(..10).unwrap_or(&cert.not_after);
                writeln!(out, "<result>{}, expires {day}</result>", report.state.as_str())?;
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

fn plain_lines(report: &StatusReport) -> Vec<(String, String)> {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_owned());
    let mut lines = vec![("State".to_owned(), report.state.as_str().to_owned())];
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
    lines.push(("Last attempt".to_owned(), or(&report.renewal.last_attempt, "never")));
    lines.push(("Last error".to_owned(), or(&report.renewal.last_error, "none")));
    lines.push(("Next attempt".to_owned(), or(&report.renewal.next_attempt, "when due")));
    lines.push(("CA".to_owned(), or(&report.ca.url, "not configured")));
    for (name, b) in &report.browsers {
        let mut value = String::from(if b.present { "in place" } else { "missing" });
        if b.managed {
            value.push_str(", managed");
        }
        if let Some(detail) = &b.detail {
            value.push_str(&format!(" ({detail})"));
        }
        lines.push((format!("Browser {name}"), value));
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
