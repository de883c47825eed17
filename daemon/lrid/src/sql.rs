//! `lrid sql "SELECT …"`: a Flight SQL client of `lrid serve`.

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::{Args, ValueEnum};
use futures::TryStreamExt;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query.
    query: String,
    /// The daemon's address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "LRID_SERVER")]
    server: String,
    /// Bearer token, when the daemon needs one.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(args: &SqlArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let batches = runtime.block_on(query(&args.server, args.token.as_deref(), &args.query))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(&batches)?;
            use std::io::Write;
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            use std::io::Write;
            writeln!(w.into_inner())?;
        }
    }
    Ok(())
}

/// A connection to the daemon at `server` (`http://`, `https://`, or `host:port`), trusting the
/// CA file of `--ca-file` / `LRID_CA_FILE` for `https://`.
async fn connect(server: &str) -> Result<tonic::transport::Channel> {
    let ca = lrid_sdk::tls::ca_file_from_env();
    let remote = lrid_sdk::Remote::new(server, ca.as_deref()).map_err(anyhow::Error::msg)?;
    let endpoint = remote.endpoint().map_err(anyhow::Error::msg)?;
    endpoint.connect().await.map_err(|e| {
        if lrid_sdk::tls::untrusted_certificate(&e) {
            anyhow::anyhow!(
                "cannot reach lrid at {}: {}",
                remote.server,
                lrid_sdk::tls::UNTRUSTED_HINT
            )
        } else {
            anyhow::Error::new(e).context(format!(
                "cannot reach lrid at {}; is `lrid serve` running?",
                remote.server
            ))
        }
    })
}

/// Runs the Flight action `kind` with `body` on the daemon at `server`; its first answer.
pub async fn action(
    server: &str,
    token: Option<&str>,
    kind: &str,
    body: Vec<u8>,
) -> Result<bytes::Bytes> {
    let mut client = arrow_flight::FlightClient::new(connect(server).await?);
    if let Some(t) = token {
        client
            .add_header("authorization", &format!("Bearer {t}"))
            .map_err(flight_error)?;
    }
    let mut answers = client
        .do_action(arrow_flight::Action::new(kind, body))
        .await
        .map_err(flight_error)?;
    answers
        .try_next()
        .await
        .map_err(flight_error)?
        .with_context(|| format!("the daemon answered '{kind}' with nothing"))
}

/// The batches of one statement run on the daemon at `server`.
pub async fn query(server: &str, token: Option<&str>, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut client = FlightSqlServiceClient::new(connect(server).await?);
    if let Some(t) = token {
        client.set_header("authorization", format!("Bearer {t}"));
    }
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(flight_error)?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .context("the server sent an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(flight_error)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(flight_error)?);
    }
    Ok(batches)
}

/// The server's message, without the transport's wrapping.
fn flight_error(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => {
            anyhow::anyhow!("{} ({:?})", s.message(), s.code())
        }
        other => anyhow::anyhow!("{other}"),
    }
}
