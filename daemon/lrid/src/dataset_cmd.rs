//! `lrid dataset export --out FILE.parquet`: exactly what the classifiers see (spec §2) — one
//! row per example with its metadata and label, then the named features (`grp_id0..2`,
//! `<statistic>_t<point>`), before normalisation — so that a user can check lrid with
//! scikit-learn or pandas.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parquet::arrow::ArrowWriter;

use crate::corpus::{CorpusArgs, Daemon};

#[derive(Debug, Args)]
pub struct DatasetArgs {
    #[command(subcommand)]
    command: DatasetCommand,
}

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Write the classifiers' dataset to a Parquet file.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// The Parquet file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: &DatasetArgs) -> Result<()> {
    match &args.command {
        DatasetCommand::Export(a) => export(a),
    }
}

fn export(args: &ExportArgs) -> Result<()> {
    let daemon = Daemon::connect(&args.corpus)?;
    let dataset = daemon.corpus(&args.corpus, Some(&args.corpus.model))?;
    let batch = dataset.to_batch()?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = args.out.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let counts: Vec<String> = dataset
        .rules
        .iter()
        .zip(dataset.counts())
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "{}: {} examples × {} features ({}); {} runs left out",
        args.out.display(),
        dataset.len(),
        batch.num_columns() - lrid_classify::dataset::METADATA_COLUMNS,
        counts.join(", "),
        dataset.excluded.len()
    );
    Ok(())
}
