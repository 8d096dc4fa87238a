//! Flag groups shared by several subcommands (`#[command(flatten)]`), so that a concept has
//! one spelling and one help text everywhere.

use crate::engine::filter::rows::{cells_to_row, read_metadata, Sources};
use crate::engine::filter::table::{json_to_batch, read_user_ids};
use crate::engine::filter::UserIds;
use crate::engine::io::{CsvOptions, VecFormat};
use crate::engine::{Result, SearchParams, VectorFile};
use arrow_array::RecordBatch;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Input-format flags.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Format of the vector input (default: from the extension; stdin (-) is recognised
    /// when it is .npy, other formats on stdin need this flag).
    #[arg(long, value_name = "FORMAT", value_parser = clap::builder::PossibleValuesParser::new(VecFormat::NAMES))]
    pub input_format: Option<String>,

    /// CSV: the id column, by header name or 0-based position.
    #[arg(long, value_name = "COLUMN")]
    pub id_column: Option<String>,

    /// CSV: the first line is a header (default: detected).
    #[arg(long)]
    pub header: bool,
}

impl InputArgs {
    /// Open `path` as a vector file per these flags.
    pub fn open(&self, path: &Path) -> Result<VectorFile> {
        self.open_csv(path, Vec::new())
    }

    fn open_csv(&self, path: &Path, metadata_columns: Vec<String>) -> Result<VectorFile> {
        let hint = self.input_format.as_deref().and_then(VecFormat::parse);
        let csv =
            CsvOptions { header: self.header.then_some(true), id_column: self.id_column.clone(), metadata_columns };
        VectorFile::open(path, hint, &csv)
    }
}

/// The text of a `--filter` argument: the JSON itself, or `@PATH` for a file holding it.
///
/// Errors: `Io` naming the file.
pub fn filter_text(arg: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        Some(p) => std::fs::read_to_string(p).map_err(|e| crate::engine::Error::io(Path::new(p), e)),
        None => Ok(arg.to_string()),
    }
}

/// The metric and training sample of a new index (`build`, `train`).
#[derive(Debug, Clone, Args)]
pub struct TrainingArgs {
    /// Distance metric; cosine normalizes vectors on build, add and search.
    #[arg(long, value_enum, default_value_t = MetricArg::L2)]
    pub metric: MetricArg,

    /// Training sample size (default: all vectors up to max(100000, 256 × nlist)).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub train_size: Option<u64>,

    /// Seed of the training sample.
    #[arg(long, value_name = "NUM", default_value_t = 42)]
    pub seed: u64,
}

impl TrainingArgs {
    /// `--train-size` as a row count.
    pub fn train_size(&self) -> Option<usize> {
        self.train_size.map(|v| v as usize)
    }
}

/// Per-vector metadata and ids given with new vectors (`build`, `add`).
#[derive(Debug, Clone, Args)]
pub struct MetadataArgs {
    /// Ids, one per vector: .npy/.ivecs (integers) or a text file with one id per line;
    /// integers are kept as FAISS ids, any other strings are mapped to FAISS ids inside and
    /// shown wherever results are.
    #[arg(long, value_name = "PATH")]
    pub ids: Option<PathBuf>,

    /// Metadata, one record per vector in input order: JSON Lines (.jsonl; one object per
    /// line), Parquet (.parquet) or CSV/TSV with a header. Kept beside the index
    /// (INDEX.meta.parquet) for `search --filter`.
    #[arg(long, value_name = "PATH")]
    pub metadata: Option<PathBuf>,

    /// The metadata columns to keep, comma-separated: of the --metadata file, or, without
    /// --metadata, columns of a CSV input that are metadata rather than vector components.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub metadata_columns: Vec<String>,
}

impl MetadataArgs {
    /// Open the vector input: a CSV input leaves out its metadata columns (when they come
    /// from it rather than from --metadata).
    pub fn open_input(&self, input: &InputArgs, path: &Path) -> Result<VectorFile> {
        let cols = if self.metadata.is_none() { self.metadata_columns.clone() } else { Vec::new() };
        input.open_csv(path, cols)
    }

    /// Where the ids and metadata of `input` come from, for errors.
    pub fn sources(&self, input: &Path) -> Sources {
        Sources {
            ids: self.ids.as_deref().unwrap_or(input).display().to_string(),
            rows: self.metadata.as_deref().unwrap_or(input).display().to_string(),
        }
    }

    /// The new vectors' ids: --ids, else a CSV id column.
    pub fn ids(&self, input: &VectorFile) -> Result<Option<UserIds>> {
        if let Some(p) = &self.ids {
            return read_user_ids(p).map(Some);
        }
        Ok(match (input.ids(), input.keys()) {
            (Some(v), _) => Some(UserIds::Ints(v.to_vec())),
            (None, Some(k)) => Some(UserIds::Keys(k.to_vec())),
            (None, None) => None,
        })
    }

    /// The new vectors' metadata rows: --metadata (with --metadata-columns), else a CSV
    /// input's metadata columns.
    pub fn fields(&self, input: &VectorFile) -> Result<Option<RecordBatch>> {
        let cols = (!self.metadata_columns.is_empty()).then_some(self.metadata_columns.as_slice());
        if let Some(p) = &self.metadata {
            return read_metadata(p, cols).map(Some);
        }
        match input.metadata_cells() {
            None => Ok(None),
            Some(m) => {
                let rows: Vec<serde_json::Value> = m
                    .rows
                    .iter()
                    .map(|r| cells_to_row(m.names.iter().map(String::as_str).zip(r.iter().map(String::as_str))))
                    .collect();
                json_to_batch(&rows, &input.path().display().to_string()).map(Some)
            }
        }
    }
}

/// Search-time parameters.
#[derive(Debug, Clone, Args)]
pub struct SearchParamArgs {
    /// IVF: inverted lists probed per query (default: the value stored in the index).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub nprobe: Option<u64>,

    /// HNSW: efSearch, the candidate list size (default: the value stored in the index).
    #[arg(long, value_name = "NUM", value_parser = clap::value_parser!(u64).range(1..))]
    pub ef_search: Option<u64>,
}

impl SearchParamArgs {
    /// These flags as the engine's search parameters for `k` neighbours per query.
    pub fn to_params(&self, k: u64) -> SearchParams {
        SearchParams {
            k: k as usize,
            nprobe: self.nprobe.map(|v| v as usize),
            ef_search: self.ef_search.map(|v| v as usize),
        }
    }
}

/// Rows per FAISS call.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Vectors per batch handed to FAISS.
    #[arg(long, value_name = "NUM", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
}

/// Result output formats of `search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table (default when stdout is a terminal).
    Table,
    /// JSON Lines, one object per query (default otherwise).
    Jsonl,
    /// CSV: query,rank,id,distance.
    Csv,
    /// NumPy: ids (int64, nq × k) to -o, distances (float32) to STEM.distances.npy.
    Npy,
    /// texmex: ids (int32) to -o (.ivecs), distances to STEM.fvecs.
    Ivecs,
}

impl OutputFormat {
    /// The format to use: `--format` if given; else from `-o`'s extension (`.npy`, `.ivecs`,
    /// `.csv`, anything else JSON Lines); else a table on a terminal and JSON Lines otherwise.
    pub fn resolve(explicit: Option<OutputFormat>, output: Option<&std::path::Path>) -> OutputFormat {
        if let Some(f) = explicit {
            return f;
        }
        match output {
            Some(p) => match p.extension().and_then(|e| e.to_str()) {
                Some("npy") => OutputFormat::Npy,
                Some("ivecs") => OutputFormat::Ivecs,
                Some("csv") => OutputFormat::Csv,
                _ => OutputFormat::Jsonl,
            },
            None if super::render::stdout_is_tty() => OutputFormat::Table,
            None => OutputFormat::Jsonl,
        }
    }

    /// Whether results go to files (`-o`) as binary arrays.
    pub fn is_binary(self) -> bool {
        matches!(self, OutputFormat::Npy | OutputFormat::Ivecs)
    }

    /// The text format of a non-binary output.
    pub fn text(self) -> super::render::TextFormat {
        match self {
            OutputFormat::Table => super::render::TextFormat::Table,
            OutputFormat::Csv => super::render::TextFormat::Csv,
            _ => super::render::TextFormat::Jsonl,
        }
    }
}

/// Metric names for `--metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// Squared Euclidean distance.
    L2,
    /// Inner product.
    Ip,
    /// Cosine similarity (vectors normalized on build, add and search).
    Cosine,
}

impl From<MetricArg> for crate::engine::Metric {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::L2 => crate::engine::Metric::L2,
            MetricArg::Ip => crate::engine::Metric::Ip,
            MetricArg::Cosine => crate::engine::Metric::Cosine,
        }
    }
}

/// `-o/--output PATH`.
#[derive(Debug, Clone, Args)]
pub struct OutputPathArg {
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

/// How to open an index file (`--mmap`, `--warm`).
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    /// Memory-map the index instead of loading it: resident memory stays a small fraction of
    /// the file, and the index is read-only. Read flags are chosen by index type.
    #[arg(long)]
    pub mmap: bool,

    /// With --mmap: read the file once sequentially first, so the first queries on a cold
    /// page cache do not fault in random order.
    #[arg(long, requires = "mmap")]
    pub warm: bool,
}

impl OpenArgs {
    /// The engine's open options.
    pub fn options(&self) -> crate::engine::index::OpenOptions {
        crate::engine::index::OpenOptions { mmap: self.mmap, warm: self.warm, no_search: false }
    }
}
