//! Logging: the `tracing` subscriber the binary installs, its level (changeable on a reload,
//! through a `tracing_subscriber::reload` layer) and its two formats: `text` (colours only when
//! stdout, where logs go, is a terminal, so files and pipes get no ANSI codes) and `json` (one
//! object a line).
//!
//! The JSON formatter is our own ~60 lines instead of tracing-subscriber's `json` feature: that
//! feature pulls `tracing-serde` and `serde_json` into the binary for what is a handful of
//! escaped string writes here.
use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `ts`, `level`, `message` and the event's fields.
    Json,
}

/// Changes the level of the installed subscriber.
pub struct LogLevel(reload::Handle<LevelFilter, Registry>);

impl LogLevel {
    /// Sets the level (`error` ... `trace`); the config's validation has checked the name.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = parse_level(level)?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

fn parse_level(level: &str) -> Result<LevelFilter, String> {
    level
        .parse::<LevelFilter>()
        .map_err(|_| format!("unknown log level {level:?}"))
}

/// Installs the process's subscriber (once, in `main`); logs go to stdout.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<LogLevel> {
    let (filter, handle) = reload::Layer::new(parse_level(level).map_err(anyhow::Error::msg)?);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::stdout().is_terminal();
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().event_format(Json))
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))?;
    Ok(LogLevel(handle))
}

/// The JSON line format.
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut line = String::with_capacity(128);
        line.push_str("{\"ts\":");
        push_str(&mut line, &ts);
        line.push_str(",\"level\":");
        push_str(&mut line, event.metadata().level().as_str());
        let mut fields = JsonFields { out: line };
        event.record(&mut fields);
        fields.out.push('}');
        writeln!(writer, "{}", fields.out)
    }
}

struct JsonFields {
    out: String,
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.out.push(',');
        push_str(&mut self.out, field.name());
        self.out.push(':');
        push_str(&mut self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let _ = write!(self.out, ",\"{}\":{value}", field.name());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let _ = write!(self.out, ",\"{}\":{value}", field.name());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let _ = write!(self.out, ",\"{}\":{value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Appends `s` as a JSON string (quoted, escaped).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_str;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_str(&mut s, "a \"b\"\n\\c\u{1}");
        assert_eq!(s, r#""a \"b\"\n\\c\u0001""#);
    }
}
