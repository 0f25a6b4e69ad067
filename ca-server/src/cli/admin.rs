//! `devicetrust-ca admin`: a running CA's administration API from the command line, so that
//! an administrator never writes curl lines: a device's record, revocation of a device or a
//! user, binding a certificate to its user, and the event log (once or followed).
//!
//! Output is a table for people and, with `--json`, the API's JSON for scripts (one object
//! per line for events, so `--follow` streams). The admin token comes from `--token-file` or
//! `DEVICETRUST_ADMIN_TOKEN`, never from an argument.
//!
//! Exit codes: 0 done; 1 the CA could not be reached, failed or refused the request (a
//! certificate already bound to someone else); 2 a usage or configuration problem (no token,
//! a refused token, an untrusted server certificate, an unreadable file); 3 the device or
//! certificate is not known to the CA.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ca_client::protocol::{DeviceRecord, ErrorCode, Event, Outcome, RevokeResponse};
use ca_client::{AdminClient, ClientError, ClientOptions, EventsQuery};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use url::Url;

/// Largest page asked for at once (the CA's maximum).
const PAGE: u32 = 1000;
/// How often `events --follow` asks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
/// Where `events` starts without `--since` or `--after`.
const DEFAULT_SINCE: &str = "1h";

/// Talk to a running CA's administration API.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
#[command(after_help = "Exit codes: 0 done, 1 the CA could not be reached or failed, 2 usage or \
    configuration (token, --ca-bundle, --url), 3 no such device or certificate.")]
pub(super) struct AdminArgs {
    /// The CA's URL, the one agents use as ca_url (its main listener), e.g.
    /// https://devicetrust.example.com:8443.
    #[arg(long, value_name = "URL", env = "DEVICETRUST_CA_URL", global = true)]
    url: Option<Url>,
    /// PEM file of the CA certificate(s) the CA's TLS certificate chains to, when that is not
    /// publicly trusted (`devicetrust-ca dev` prints it as caBundle).
    #[arg(long, value_name = "PEM", env = "DEVICETRUST_CA_BUNDLE", global = true)]
    ca_bundle: Option<PathBuf>,
    /// File holding the admin token (the CA's [tokens] admin file); without it, the
    /// environment variable DEVICETRUST_ADMIN_TOKEN.
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (events: one object per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// A device and the certificates issued to it.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Users' certificates.
    #[command(subcommand)]
    Users(UsersCommand),
    /// One certificate, by its serial number.
    #[command(subcommand)]
    Certificates(CertificatesCommand),
    /// The CA's event log: enrollments, issuance, renewals, revocations, refusals.
    Events {
        /// Start at the first event published at or after WHEN: a time (RFC 3339, e.g.
        /// 2026-12-01T09:00:00Z) or a duration ago (30m, 2h, 7d). Default: 1h, unless --after
        /// is given.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Start after the event with this id (the last id a previous call printed).
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// Print at most N events (without --follow); the rest can be read with --after.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: u32,
        /// Keep printing new events as they happen, until interrupted.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Show a device (by its UDID, in any case) and every certificate issued to it.
    Show {
        /// The device's hardware UUID (Jamf Pro: General > UDID).
        udid: String,
    },
    /// Revoke every unexpired certificate of a device; the agent on it uninstalls itself at
    /// its next run. Harmless to repeat.
    Revoke {
        /// The device's hardware UUID.
        udid: String,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Revoke every unexpired certificate enrolled by or bound to a user, on every device.
    Revoke {
        /// The user name, as the agent enrolled it (the Mac's short user name).
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum CertificatesCommand {
    /// Vouch that a certificate belongs to a user: it is bound to them at once, as its first
    /// use at the cert-auth domain or an OpenID Connect sign-in would (docs/identity-providers.md).
    Bind {
        /// The certificate's serial number (hex, as `devices show` prints it).
        serial: String,
        /// The user it belongs to.
        #[arg(long, value_name = "USER")]
        user: String,
    },
}

/// Why an admin command failed, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// Usage or local configuration.
    #[error("{0}")]
    Config(String),
    /// The CA answered with an error or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No such device or certificate.
    #[error("the CA has no {0}")]
    NotFound(String),
    /// Standard output is gone or failing.
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

impl AdminError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::NotFound(_) => 3,
            Self::Output(_) => 1,
            Self::Client(error) => match error {
                ClientError::InvalidConfiguration { .. } | ClientError::UntrustedServer { .. } => 2,
                ClientError::Ca { code: ErrorCode::InvalidToken, .. } => 2,
                _ => 1,
            },
        }
    }

    /// The message, with what to do when the cause says it.
    fn message(&self) -> String {
        match self {
            Self::Client(ClientError::Ca { code: ErrorCode::InvalidToken, .. }) => {
                "the CA refused the admin token: pass --token-file with the file the CA's [tokens] admin \
                 setting names, or set DEVICETRUST_ADMIN_TOKEN to its content"
                    .to_owned()
            }
            Self::Client(error @ (ClientError::Connect { .. } | ClientError::Timeout { .. })) => {
                format!("{error} (is the CA running, and is --url the URL agents use as ca_url?)")
            }
            other => other.to_string(),
        }
    }
}

/// Runs an admin command and returns its exit code; errors are printed on stderr.
pub(super) async fn run(args: AdminArgs, shutdown: impl Future<Output = ()>) -> ExitCode {
    match run_inner(args, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is not a failure of the command.
        Err(AdminError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message());
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run_inner(args: AdminArgs, shutdown: impl Future<Output = ()>) -> Result<(), AdminError> {
    let client = connect(&args)?;
    let json = args.json;
    let mut out = Output::stdout();
    match args.command {
        AdminCommand::Devices(DevicesCommand::Show { udid }) => {
            let record = client.device(&udid).await.map_err(|e| not_found_as(e, Missing::Device(&udid)))?;
            if json { out.json(&record) } else { out.text(&device_text(&record)) }
        }
        AdminCommand::Devices(DevicesCommand::Revoke { udid }) => {
            let revoked = client.revoke_device(&udid).await?;
            if json {
                out.json(&RevokeResponse { revoked })
            } else {
                out.text(&revoked_text(revoked, &format!("device {udid}")))
            }
        }
        AdminCommand::Users(UsersCommand::Revoke { user }) => {
            let revoked = client.revoke_user(&user).await?;
            if json {
                out.json(&RevokeResponse { revoked })
            } else {
                out.text(&revoked_text(revoked, &format!("user {user}")))
            }
        }
        AdminCommand::Certificates(CertificatesCommand::Bind { serial, user }) => {
            let bound = client
                .bind(&serial, &user)
                .await
                .map_err(|e| not_found_as(e, Missing::Certificate(&serial)))?;
            if json {
                out.json(&bound)
            } else {
                out.text(&format!(
                    "Certificate {} is {}, bound to {}.\n",
                    bound.serial_number,
                    bound.state,
                    bound.bound_user.as_deref().unwrap_or("nobody")
                ))
            }
        }
        AdminCommand::Events { since, after, limit, follow } => {
            let since = match (&since, after) {
                (Some(when), _) => Some(parse_since(when, Utc::now())?),
                (None, Some(_)) => None,
                (None, None) => Some(parse_since(DEFAULT_SINCE, Utc::now())?),
            };
            if limit == 0 {
                return Err(AdminError::Config("--limit must be at least 1".to_owned()));
            }
            let printer = EventPrinter { json, header_done: false };
            events(
                &client,
                EventsQuery { after, since, limit: None },
                limit,
                follow,
                printer,
                &mut out,
                shutdown,
            )
            .await
        }
    }
}

fn connect(args: &AdminArgs) -> Result<AdminClient, AdminError> {
    let url = args.url.clone().ok_or_else(|| {
        AdminError::Config(
            "no CA URL: pass --url https://HOST:PORT (the URL agents use as ca_url) or set DEVICETRUST_CA_URL"
                .to_owned(),
        )
    })?;
    let token = admin_token(args.token_file.as_deref(), std::env::var("DEVICETRUST_ADMIN_TOKEN").ok())?;
    let mut options = ClientOptions::new(url);
    options.user_agent = concat!("devicetrust-ca-admin/", env!("CARGO_PKG_VERSION")).to_owned();
    options.trust_setting = "--ca-bundle";
    if let Some(path) = &args.ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| AdminError::Config(format!("cannot read --ca-bundle {}: {e}", path.display())))?;
        options = options.with_pinned_roots(pem);
    }
    Ok(AdminClient::new(options, &token)?)
}

/// The token from `file` (its first line) or else from the environment's `from_env`.
fn admin_token(file: Option<&Path>, from_env: Option<String>) -> Result<String, AdminError> {
    let token = match (file, from_env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| AdminError::Config(format!("cannot read --token-file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        (None, Some(value)) => value.trim().to_owned(),
        (None, None) => {
            return Err(AdminError::Config(
                "no admin token: pass --token-file PATH (the file of the CA's [tokens] admin) or set \
                 DEVICETRUST_ADMIN_TOKEN"
                    .to_owned(),
            ));
        }
    };
    if token.is_empty() {
        return Err(AdminError::Config("the admin token is empty".to_owned()));
    }
    Ok(token)
}

/// What a command looked up, for its `not_found` message.
enum Missing<'a> {
    Device(&'a str),
    Certificate(&'a str),
}

fn not_found_as(error: ClientError, missing: Missing<'_>) -> AdminError {
    match &error {
        ClientError::Ca { code: ErrorCode::Unknown(code), .. } if code == "not_found" => {
            AdminError::NotFound(match missing {
                Missing::Device(udid) => format!("device {udid}"),
                Missing::Certificate(serial) => format!("certificate {serial}"),
            })
        }
        _ => AdminError::Client(error),
    }
}

/// `--since`: an RFC 3339 time, or a duration (`humantime`'s syntax: `30m`, `2h`, `7d`,
/// `1h 30m`) before `now`.
fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, AdminError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let bad = || {
        AdminError::Config(format!(
            "--since {text:?} is neither a time (2026-12-01T09:00:00Z) nor a duration ago (30m, 2h, 7d)"
        ))
    };
    let ago = humantime::parse_duration(text).map_err(|_| bad())?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| bad())?;
    now.checked_sub_signed(ago).ok_or_else(bad)
}

/// Prints pages of events: up to `limit`, or, with `follow`, every new one until `shutdown`.
async fn events(
    client: &AdminClient,
    mut query: EventsQuery,
    limit: u32,
    follow: bool,
    mut printer: EventPrinter,
    out: &mut Output,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminError> {
    tokio::pin!(shutdown);
    let mut printed: u32 = 0;
    let mut warned = false;
    loop {
        let page_size = if follow { PAGE } else { PAGE.min(limit - printed) };
        let page = tokio::select! {
            page = client.events(EventsQuery { limit: Some(page_size), ..query }) => page,
            () = &mut shutdown => return Ok(()),
        };
        let page = match page {
            Ok(page) => {
                warned = false;
                page
            }
            // Following rides out a CA restart; the message says so once per outage.
            Err(error) if follow && error.is_retryable() => {
                if !warned {
                    eprintln!("warning: {error}; trying again every {}s", FOLLOW_INTERVAL.as_secs());
                    warned = true;
                }
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(last) = page.last() {
            // After the first page the position is the id alone: `since` has done its work.
            query = EventsQuery { after: Some(last.id), since: None, limit: None };
        }
        printer.page(&page, out)?;
        printed = printed.saturating_add(u32::try_from(page.len()).unwrap_or(u32::MAX));
        let full = u32::try_from(page.len()).is_ok_and(|n| n == page_size);
        if !follow {
            if printed >= limit && full {
                if let Some(after) = query.after {
                    eprintln!("note: more events may follow; continue with --after {after}");
                }
                return Ok(());
            }
            if !full {
                if printed == 0 && !printer.json {
                    eprintln!("no events");
                }
                return Ok(());
            }
            continue;
        }
        if full {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

struct EventPrinter {
    json: bool,
    header_done: bool,
}

/// Column widths of the event table: fixed, so that pages printed while following line up.
const EVENT_COLUMNS: [(&str, usize); 8] = [
    ("ID", 6),
    ("TIME", 20),
    ("EVENT", 32),
    ("OUTCOME", 7),
    ("USER", 12),
    ("DEVICE", 36),
    ("SERIAL", 32),
    ("DETAIL", 0),
];

impl EventPrinter {
    fn page(&mut self, events: &[Event], out: &mut Output) -> Result<(), AdminError> {
        if self.json {
            for event in events {
                out.json(event)?;
            }
            return Ok(());
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        if !self.header_done {
            text.push_str(&row(EVENT_COLUMNS.map(|(name, _)| name.to_owned())));
            self.header_done = true;
        }
        for event in events {
            text.push_str(&row(event_cells(event)));
        }
        out.text(&text)
    }
}

fn event_cells(event: &Event) -> [String; 8] {
    let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
    [
        event.id.to_string(),
        event.published.to_rfc3339_opts(SecondsFormat::Secs, true),
        event.event_type.as_str().to_owned(),
        match event.outcome {
            Outcome::Success => "SUCCESS".to_owned(),
            Outcome::Failure => "FAILURE".to_owned(),
        },
        or_dash(event.user.as_deref()),
        or_dash(event.device.as_ref().map(|d| d.udid.as_str())),
        or_dash(event.serial_number.as_deref()),
        detail(event),
    ]
}

/// A refusal's reason and the OpenID Connect client a sign-in was for, or `-`.
fn detail(event: &Event) -> String {
    let parts: Vec<String> =
        [event.reason.clone(), event.client_id.as_ref().map(|id| format!("client {id}"))]
            .into_iter()
            .flatten()
            .collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

/// One table row: each cell padded to its column's width (longer cells push the rest
/// right rather than being cut: a serial or UDID is copied from here), the last unpadded.
fn row(cells: [String; 8]) -> String {
    let mut line = String::new();
    for (index, (cell, (_, width))) in cells.iter().zip(EVENT_COLUMNS).enumerate() {
        if index + 1 == EVENT_COLUMNS.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

fn device_text(record: &DeviceRecord) -> String {
    let mut text = format!(
        "Device:         {}\nSerial number:  {}\nName:           {}\nPlatform:       {} {}\nFirst enrolled: {}\n",
        record.udid,
        record.serial_number,
        record.display_name,
        record.platform,
        record.os_version,
        record.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    if record.certificates.is_empty() {
        text.push_str("\nNo certificates.\n");
        return text;
    }
    let headers = ["SERIAL", "STATE", "USER", "BOUND TO", "NOT AFTER", "REVOKED"];
    let rows: Vec<[String; 6]> = record
        .certificates
        .iter()
        .map(|c| {
            [
                c.serial_number.clone(),
                c.state.to_string(),
                c.user.clone(),
                c.bound_user.clone().unwrap_or_else(|| "-".to_owned()),
                c.not_after.to_rfc3339_opts(SecondsFormat::Secs, true),
                c.revoked_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    text.push('\n');
    for cells in std::iter::once(headers.map(str::to_owned)).chain(rows) {
        let line: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn revoked_text(revoked: u64, whom: &str) -> String {
    match revoked {
        0 => format!("Nothing to revoke: {whom} has no unexpired, unrevoked certificate.\n"),
        1 => format!("Revoked 1 certificate of {whom}.\n"),
        n => format!("Revoked {n} certificates of {whom}.\n"),
    }
}

/// Standard output, flushed after each piece so that `--follow` output reaches a pipe as
/// it happens.
struct Output(std::io::Stdout);

impl Output {
    fn stdout() -> Self {
        Self(std::io::stdout())
    }

    fn text(&mut self, text: &str) -> Result<(), AdminError> {
        use std::io::Write as _;
        let mut lock = self.0.lock();
        lock.write_all(text.as_bytes()).and_then(|()| lock.flush()).map_err(AdminError::Output)
    }

    fn json(&mut self, value: &impl serde::Serialize) -> Result<(), AdminError> {
        let mut line = serde_json::to_string(value).map_err(|e| AdminError::Output(e.into()))?;
        line.push('\n');
        self.text(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_table() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().with_timezone(&Utc);
        let cases: [(&str, &str, Option<&str>); 6] = [
            ("ok/rfc3339", "2026-12-01T09:00:00Z", Some("2026-12-01T09:00:00+00:00")),
            ("ok/offset", "2026-12-01T10:00:00+01:00", Some("2026-12-01T09:00:00+00:00")),
            ("ok/minutes", "30m", Some("2026-12-03T09:30:00+00:00")),
            ("ok/days", "7d", Some("2026-11-26T10:00:00+00:00")),
            ("fail/word", "yesterday", None),
            ("fail/empty", "", None),
        ];
        for (name, input, expected) in cases {
            let got = parse_since(input, now).ok().map(|t| t.to_rfc3339());
            assert_eq!(got.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn token_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        // Name, --token-file, DEVICETRUST_ADMIN_TOKEN, the token or the start of the error.
        type Case<'a> = (&'a str, Option<&'a Path>, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: [Case<'_>; 5] = [
            ("ok/file-first-line", Some(&file), None, Ok("s3cret")),
            ("ok/file-before-environment", Some(&file), Some("other"), Ok("s3cret")),
            ("ok/environment", None, Some(" env-token "), Ok("env-token")),
            ("fail/none", None, None, Err("no admin token: pass --token-file")),
            ("fail/empty-file", Some(&empty), None, Err("the admin token is empty")),
        ];
        for (name, file, env, expected) in cases {
            match (admin_token(file, env.map(str::to_owned)), expected) {
                (Ok(token), Ok(want)) => assert_eq!(token, want, "{name}"),
                (Err(error), Err(want)) => assert!(error.to_string().starts_with(want), "{name}: {error}"),
                (got, want) => panic!("{name}: {got:?} vs {want:?}"),
            }
        }
        let error = admin_token(Some(&missing), None).unwrap_err();
        assert!(error.to_string().contains("cannot read --token-file"), "{error}");
        assert_eq!(error.exit_code(), 2);
    }
}
