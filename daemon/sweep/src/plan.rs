//! The plan: a sweep file → its cells → run specs, shards and what is left to run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use lrid_trainer::{Arch, TaskName, defaults};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A seed of the grid: a number, or "unseeded" (the paper's None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seed {
    Fixed(i64),
    Unseeded(Unseeded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unseeded {
    Unseeded,
}

impl Seed {
    pub fn value(self) -> Option<i64> {
        match self {
            Seed::Fixed(s) => Some(s),
            Seed::Unseeded(_) => None,
        }
    }

    fn tag(self) -> String {
        self.value().map_or("u".into(), |s| s.to_string())
    }
}

/// One Cartesian grid; a sweep is the union of its `[[grid]]`s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grid {
    architectures: Vec<Arch>,
    tasks: Vec<TaskName>,
    rules: Vec<String>,
    batch_sizes: Vec<usize>,
    model_seeds: Vec<Seed>,
    data_seeds: Vec<Seed>,
    /// Overrides `[train] resolution` for this grid.
    resolution: Option<i64>,
    /// Overrides `[train] epochs` for this grid.
    epochs: Option<f64>,
}

/// Settings shared by every cell (the flags of `lrid train`; unset: its defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub epochs: f64,
    #[serde(default = "default_points")]
    pub points: usize,
    pub train_examples: Option<usize>,
    pub eval_examples: Option<usize>,
    pub resolution: Option<i64>,
    pub width: Option<f64>,
    pub classes: Option<i64>,
    pub temperature: Option<f64>,
    pub cifar_dir: Option<PathBuf>,
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_points() -> usize {
    defaults::POINTS
}

fn default_device() -> String {
    "auto".into()
}

/// Per-rule settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Base learning rate at batch size 128, scaled linearly with the batch size
    /// ([`lrid_trainer::scaled_lr`]).
    pub lr: Option<f64>,
    /// The rule's JSON configuration.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// A sweep file, resolved (its `base` files merged under it) and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Prefix of every run id; the journal's folder name.
    pub name: String,
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// libtorch threads per worker (default: the machine's cores / workers).
    pub threads_per_worker: Option<i32>,
    grid: Vec<Grid>,
    pub train: TrainSettings,
    #[serde(default)]
    pub rules: BTreeMap<String, RuleSettings>,
    /// The resolved TOML (base files merged), as read.
    #[serde(skip)]
    resolved: toml::Table,
}

fn default_workers() -> usize {
    2
}

impl SweepFile {
    /// Reads, resolves and checks a sweep file.
    pub fn load(path: &Path) -> Result<SweepFile> {
        let table = Self::merged(path, 0)?;
        Self::from_table(path, table)
    }

    fn from_table(path: &Path, table: toml::Table) -> Result<SweepFile> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut sweep: SweepFile =
            table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| Error::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        sweep.resolved = table;
        lrid_protocol::validate_run_id(&sweep.name)
            .map_err(|e| invalid(format!("sweep name: {e}")))?;
        if sweep.grid.is_empty() {
            return Err(invalid("no [[grid]]".into()));
        }
        for (i, g) in sweep.grid.iter().enumerate() {
            for (what, empty) in [
                ("architectures", g.architectures.is_empty()),
                ("tasks", g.tasks.is_empty()),
                ("rules", g.rules.is_empty()),
                ("batch_sizes", g.batch_sizes.is_empty()),
                ("model_seeds", g.model_seeds.is_empty()),
                ("data_seeds", g.data_seeds.is_empty()),
            ] {
                if empty {
                    return Err(invalid(format!("grid {} has an empty {what}", i + 1)));
                }
            }
        }
        if sweep.workers == 0 {
            return Err(invalid("workers must be at least 1".into()));
        }
        if let Some(unused) = sweep.rules.keys().find(|r| !sweep.rule_names().contains(r)) {
            return Err(invalid(format!(
                "[rules.{unused}] configures a rule that no grid uses"
            )));
        }
        Ok(sweep)
    }

    /// The file's TOML with its `base` (another sweep file, relative to this one) under it:
    /// tables merge key by key, anything else (a grid list, a number) is replaced.
    fn merged(path: &Path, depth: usize) -> Result<toml::Table> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Some(base) = table.remove("base") else {
            return Ok(table);
        };
        let invalid = |message: String| Error::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let Some(base) = base.as_str() else {
            return Err(invalid("base must be a file name".into()));
        };
        if depth >= 4 {
            return Err(invalid("more than 4 levels of base files".into()));
        }
        let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
        let mut merged = Self::merged(&base_path, depth + 1)
            .map_err(|e| invalid(format!("its base {base}: {e}")))?;
        fn merge(into: &mut toml::Table, from: toml::Table) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        merge(&mut merged, table);
        Ok(merged)
    }

    /// The resolved sweep as one TOML file (no `base`): what `submit` hands to every shard, so
    /// that all of them run the same plan even if the original files change meanwhile.
    pub fn resolved_toml(&self) -> String {
        toml::to_string(&self.resolved).expect("a TOML table serialises")
    }

    /// Every rule of every grid, once.
    pub fn rule_names(&self) -> Vec<String> {
        let mut rules: Vec<String> = Vec::new();
        for r in self.grid.iter().flat_map(|g| &g.rules) {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
        rules
    }

    /// Every cell, in grid order (a cell listed by two grids runs once).
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for g in &self.grid {
            for &arch in &g.architectures {
                for &task in &g.tasks {
                    for rule in &g.rules {
                        for &batch_size in &g.batch_sizes {
                            for &model_seed in &g.model_seeds {
                                for &data_seed in &g.data_seeds {
                                    let cell = Cell {
                                        arch,
                                        task,
                                        rule: rule.clone(),
                                        batch_size,
                                        model_seed,
                                        data_seed,
                                        resolution: g.resolution.or(self.train.resolution),
                                        epochs: g.epochs.unwrap_or(self.train.epochs),
                                    };
                                    if seen.insert(cell.id(&self.name)) {
                                        cells.push(cell);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        cells
    }

    /// The cells of one shard, in grid order.
    pub fn shard_cells(&self, shard: Shard) -> Vec<Cell> {
        self.cells()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| shard.owns(*i))
            .map(|(_, c)| c)
            .collect()
    }

    /// What one cell's worker runs.
    pub fn spec(&self, cell: &Cell) -> RunSpec {
        let t = &self.train;
        let rule = self.rules.get(&cell.rule).cloned().unwrap_or_default();
        RunSpec {
            cell: cell.id(&self.name),
            arch: cell.arch.name().to_string(),
            task: cell.task.name().to_string(),
            rule: cell.rule.clone(),
            batch_size: cell.batch_size,
            model_seed: cell.model_seed.value(),
            data_seed: cell.data_seed.value(),
            epochs: cell.epochs,
            points: t.points,
            train_examples: t.train_examples.unwrap_or(defaults::TRAIN_EXAMPLES),
            eval_examples: t.eval_examples.unwrap_or(defaults::EVAL_EXAMPLES),
            resolution: cell.resolution,
            width: t.width.unwrap_or(defaults::WIDTH),
            classes: t.classes,
            temperature: t.temperature.unwrap_or(defaults::TEMPERATURE),
            cifar_dir: t.cifar_dir.clone(),
            lr: rule
                .lr
                .map(|base| lrid_trainer::scaled_lr(base, cell.batch_size)),
            rule_config: rule.config,
            rule_version: None,
        }
    }

    /// The runs still to do among `cells`, each with the run id of its next attempt: a cell
    /// without a run keeps its own id; one whose runs are all unfinished gets `<cell>:a<n+1>`
    /// (the daemon never reopens a run's completed points); a closed one is done.
    pub fn pending(&self, cells: &[Cell], existing: &Existing) -> Vec<(RunSpec, String)> {
        cells
            .iter()
            .filter_map(|cell| {
                let id = cell.id(&self.name);
                let run_id = match existing.runs.get(&id) {
                    Some(&(true, _)) => return None,
                    Some(&(false, attempts)) => format!("{id}:a{}", attempts + 1),
                    None => id,
                };
                Some((self.spec(cell), run_id))
            })
            .collect()
    }

    /// The shards (of `count`) that still have a cell to run: what a resubmission needs.
    pub fn unfinished_shards(&self, count: usize, existing: &Existing) -> Vec<usize> {
        let mut shards: Vec<usize> = self
            .cells()
            .iter()
            .enumerate()
            .filter(|(_, c)| !existing.is_closed(&c.id(&self.name)))
            .map(|(i, _)| i % count)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct Cell {
    pub arch: Arch,
    pub task: TaskName,
    pub rule: String,
    pub batch_size: usize,
    pub model_seed: Seed,
    pub data_seed: Seed,
    pub resolution: Option<i64>,
    pub epochs: f64,
}

impl Cell {
    /// The cell's stable run id: `<sweep>/<arch>/<task>/<rule>/b<batch>/m<seed>/d<seed>`.
    pub fn id(&self, sweep: &str) -> String {
        format!(
            "{sweep}/{}/{}/{}/b{}/m{}/d{}",
            self.arch,
            self.task,
            self.rule,
            self.batch_size,
            self.model_seed.tag(),
            self.data_seed.tag()
        )
    }
}

/// Everything one worker needs to train one cell: serialisable, so that a plan can be shown,
/// stored, or handed to another machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The cell's stable run id (an attempt adds `:a<n>`).
    pub cell: String,
    pub arch: String,
    pub task: String,
    pub rule: String,
    pub batch_size: usize,
    pub model_seed: Option<i64>,
    pub data_seed: Option<i64>,
    pub epochs: f64,
    pub points: usize,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub resolution: Option<i64>,
    pub width: f64,
    pub classes: Option<i64>,
    pub temperature: f64,
    pub cifar_dir: Option<PathBuf>,
    /// The learning rate at this batch size; unset: the rule's default.
    pub lr: Option<f64>,
    pub rule_config: Option<serde_json::Value>,
    /// The rule's version the daemon has loaded: the worker refuses to train with another.
    #[serde(default)]
    pub rule_version: Option<String>,
}

impl RunSpec {
    /// The arguments of `lrid train` that train this spec as `run_id`.
    pub fn train_args(&self, run_id: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--arch",
            &self.arch,
            "--task",
            &self.task,
            "--rule",
            &self.rule,
            "--batch-size",
            &self.batch_size.to_string(),
            "--epochs",
            &self.epochs.to_string(),
            "--points",
            &self.points.to_string(),
            "--train-examples",
            &self.train_examples.to_string(),
            "--eval-examples",
            &self.eval_examples.to_string(),
            "--width",
            &self.width.to_string(),
            "--temperature",
            &self.temperature.to_string(),
            "--run-id",
            run_id,
        ]
        .map(str::to_string)
        .to_vec();
        let optional = [
            ("--model-seed", self.model_seed.map(|v| v.to_string())),
            ("--data-seed", self.data_seed.map(|v| v.to_string())),
            ("--resolution", self.resolution.map(|v| v.to_string())),
            ("--classes", self.classes.map(|v| v.to_string())),
            ("--lr", self.lr.map(|v| v.to_string())),
            (
                "--rule-config",
                self.rule_config.as_ref().map(|c| c.to_string()),
            ),
            ("--rule-version", self.rule_version.clone()),
            (
                "--cifar-dir",
                self.cifar_dir.as_ref().map(|d| d.display().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.push(flag.to_string());
                args.push(v);
            }
        }
        args
    }
}

/// Shard `index` of `count`: the cells at positions p (in grid order) with p mod count =
/// index. Deterministic for a sweep file; the shards of one count are disjoint and together
/// hold every cell; neighbouring cells (often the same network) land on different shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            return Err(Error::Shard(
                "the shard count must be at least 1 (got 0)".into(),
            ));
        }
        if index >= count {
            return Err(Error::Shard(format!(
                "shard index {index} is out of range for {count} shard(s) (indices 0 to {})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard from the flags, else from the scheduler's environment: Slurm's
    /// `SLURM_ARRAY_TASK_ID` / `SLURM_ARRAY_TASK_COUNT`, Kubernetes' `JOB_COMPLETION_INDEX`.
    pub fn from_flags_or_env(
        index: Option<usize>,
        count: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        let read = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::Shard(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let index = match index {
            Some(i) => i,
            None => match (read("SLURM_ARRAY_TASK_ID")?, read("JOB_COMPLETION_INDEX")?) {
                (Some(i), _) | (None, Some(i)) => i,
                (None, None) => {
                    return Err(Error::Shard(
                        "no shard index: pass --index, or run under a Slurm array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)".into(),
                    ));
                }
            },
        };
        let count = match count {
            Some(c) => c,
            None => read("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::Shard(
                    "no shard count: pass --count (or run under a Slurm array, SLURM_ARRAY_TASK_COUNT)"
                        .into(),
                )
            })?,
        };
        Shard::new(index, count)
    }

    fn owns(self, position: usize) -> bool {
        position % self.count == self.index
    }
}

/// What the daemon holds of a sweep: per cell id, whether one of its runs is closed (every
/// point completed) and how many runs (attempts) it has.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    pub runs: HashMap<String, (bool, u32)>,
}

impl Existing {
    /// From `(run_id, closed)` rows of the daemon's `runs` table.
    pub fn from_runs<'a>(rows: impl IntoIterator<Item = (&'a str, bool)>) -> Existing {
        let mut runs: HashMap<String, (bool, u32)> = HashMap::new();
        for (id, closed) in rows {
            let cell = id.split_once(":a").map_or(id, |(c, _)| c);
            let entry = runs.entry(cell.to_string()).or_default();
            entry.0 |= closed;
            entry.1 += 1;
        }
        Existing { runs }
    }

    pub fn is_closed(&self, cell: &str) -> bool {
        self.runs.get(cell).is_some_and(|r| r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn shipped(name: &str) -> SweepFile {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../config/sweeps/{name}.toml"));
        SweepFile::load(&path).unwrap()
    }

    #[test]
    fn the_demo_sweep_has_every_rule_on_two_networks() {
        let demo = shipped("demo");
        let cells = demo.cells();
        assert_eq!(
            demo.rule_names(),
            [
                "sgdm",
                "adam",
                "feedback-alignment",
                "information-alignment"
            ]
        );
        assert_eq!(cells.len(), 2 * 4 * 2 * 3 * 3);
        assert_eq!(
            cells[0].id("demo"),
            "demo/resnet18-v1/shapes/sgdm/b32/mu/du"
        );
    }

    #[test]
    fn the_live_demo_inherits_the_demo_s_training_and_the_study_covers_the_design() {
        let demo = shipped("demo");
        let live = shipped("demo-live");
        assert_eq!(live.name, "demo-live");
        assert_eq!(live.cells().len(), 4, "one run per rule");
        assert_eq!(live.train.epochs, demo.train.epochs);
        assert_eq!(live.train.width, demo.train.width);
        assert_eq!(
            live.rules["information-alignment"].config,
            demo.rules["information-alignment"].config
        );
        assert!(live.cells().iter().all(|c| c.model_seed == Seed::Fixed(7)));
        let study = shipped("study");
        let cells = study.cells();
        assert_eq!(cells.len(), 352);
        let archs: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.arch.name()).collect();
        assert_eq!(archs.len(), 10, "all ten architectures: {archs:?}");
    }

    #[test]
    fn a_base_file_is_merged_under_the_file_and_the_resolved_file_is_the_same_sweep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "name = \"b\"\nworkers = 3\n[[grid]]\narchitectures = [\"knet4\"]\ntasks = [\"shapes\"]\nrules = [\"sgdm\"]\nbatch_sizes = [8]\nmodel_seeds = [0]\ndata_seeds = [\"unseeded\"]\n[train]\nepochs = 2\nwidth = 0.5\n[rules.sgdm]\nlr = 0.3\n",
        )
        .unwrap();
        let child = dir.path().join("child.toml");
        std::fs::write(
            &child,
            "base = \"base.toml\"\nname = \"c\"\n[train]\nepochs = 4\n",
        )
        .unwrap();
        let s = SweepFile::load(&child).unwrap();
        assert_eq!((s.name.as_str(), s.workers), ("c", 3));
        assert_eq!((s.train.epochs, s.train.width), (4.0, Some(0.5)));
        assert_eq!(s.rules["sgdm"].lr, Some(0.3));
        // The resolved file, alone in another folder, is the same plan.
        let other = tempfile::tempdir().unwrap();
        let resolved = other.path().join("resolved.toml");
        std::fs::write(&resolved, s.resolved_toml()).unwrap();
        let r = SweepFile::load(&resolved).unwrap();
        let specs = |s: &SweepFile| s.cells().iter().map(|c| s.spec(c)).collect::<Vec<_>>();
        assert_eq!(specs(&r), specs(&s));
        assert!(!s.resolved_toml().contains("base"));

        std::fs::write(&child, "base = \"missing.toml\"\nname = \"c\"\n").unwrap();
        let e = SweepFile::load(&child).unwrap_err().to_string();
        assert!(
            e.contains("its base missing.toml") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&child, "base = \"child.toml\"\nname = \"c\"\n").unwrap();
        let e = SweepFile::load(&child).unwrap_err().to_string();
        assert!(e.contains("more than 4 levels"), "{e}");
    }

    #[test]
    fn the_paper_sweep_is_the_paper_s_1056_runs() {
        let paper = shipped("paper");
        let cells = paper.cells();
        assert_eq!(cells.len(), 1056);
        let knets = cells
            .iter()
            .filter(|c| c.arch.name().starts_with("knet"))
            .count();
        assert_eq!(knets, 4 * 4 * 3 * 2 * 2);
        assert!(cells.iter().all(|c| c.resolution
            == Some(if c.arch.name().starts_with("knet") {
                32
            } else {
                64
            })));
    }

    #[test]
    fn bad_sweep_files_are_refused_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let write = |body: &str| {
            let p = dir.path().join("s.toml");
            std::fs::write(&p, body).unwrap();
            SweepFile::load(&p).map(|_| ()).unwrap_err().to_string()
        };
        let grid = "[[grid]]\narchitectures = [\"knet4\"]\ntasks = [\"shapes\"]\nrules = [\"sgdm\"]\nbatch_sizes = [8]\nmodel_seeds = [0]\ndata_seeds = [\"unseeded\"]\n[train]\nepochs = 1\n";
        assert!(write(&format!("name = \"a b\"\n{grid}")).contains("invalid run id"));
        assert!(write(&format!("name = \"s\"\n{}", grid.replace("knet4", "vgg"))).contains("vgg"));
        assert!(
            write(&format!(
                "name = \"s\"\n{}",
                grid.replace("\"unseeded\"", "\"never\"")
            ))
            .contains("data_seeds")
        );
        assert!(
            write(&format!("name = \"s\"\n{}", grid.replace("[8]", "[]")))
                .contains("empty batch_sizes")
        );
        assert!(
            write(&format!("name = \"s\"\n{grid}[rules.adam]\nlr = 1\n")).contains("[rules.adam]")
        );
        assert!(write(&format!("name = \"s\"\nworkers = 0\n{grid}")).contains("workers"));
    }

    #[test]
    fn shards_are_disjoint_and_complete_for_many_sizes() {
        let paper = shipped("paper");
        let all: Vec<String> = paper.cells().iter().map(|c| c.id("paper")).collect();
        for count in [1, 2, 3, 4, 7, 10, 64, 1000, 1056, 1057, 2000] {
            let mut seen = std::collections::HashSet::new();
            let mut sizes = Vec::new();
            for index in 0..count {
                let cells = paper.shard_cells(Shard::new(index, count).unwrap());
                sizes.push(cells.len());
                for c in cells {
                    assert!(seen.insert(c.id("paper")), "{count}: twice: {}", c.id(""));
                }
            }
            assert_eq!(seen.len(), all.len(), "{count}: complete");
            // Balanced: sizes differ by at most one.
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.unwrap() - min.unwrap() <= 1, "{count}: {sizes:?}");
        }
        // Deterministic: the same file gives the same shard.
        let again = shipped("paper");
        let ids = |s: &SweepFile| -> Vec<String> {
            s.shard_cells(Shard::new(3, 7).unwrap())
                .iter()
                .map(|c| c.id(""))
                .collect()
        };
        assert_eq!(ids(&paper), ids(&again));
    }

    #[test]
    fn bad_shards_are_refused_clearly() {
        let e = Shard::new(0, 0).unwrap_err().to_string();
        assert!(e.contains("at least 1 (got 0)"), "{e}");
        let e = Shard::new(4, 4).unwrap_err().to_string();
        assert!(e.contains("index 4 is out of range for 4 shard(s)"), "{e}");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = Shard::from_flags_or_env(
            None,
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "5"),
            ]),
        )
        .unwrap();
        assert_eq!((s.index, s.count), (2, 5));
        let s =
            Shard::from_flags_or_env(None, Some(3), env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap();
        assert_eq!((s.index, s.count), (1, 3));
        // Flags win over the environment.
        let s = Shard::from_flags_or_env(Some(0), Some(2), env(&[("SLURM_ARRAY_TASK_ID", "9")]))
            .unwrap();
        assert_eq!((s.index, s.count), (0, 2));
        let e = Shard::from_flags_or_env(None, Some(2), env(&[])).unwrap_err();
        assert!(e.to_string().contains("no shard index"), "{e}");
        let e = Shard::from_flags_or_env(None, None, env(&[("JOB_COMPLETION_INDEX", "0")]))
            .unwrap_err();
        assert!(e.to_string().contains("no shard count"), "{e}");
        let e = Shard::from_flags_or_env(None, Some(2), env(&[("JOB_COMPLETION_INDEX", "x")]))
            .unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETION_INDEX=\"x\""), "{e}");
        let e = Shard::from_flags_or_env(
            None,
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "5"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn pending_skips_closed_cells_and_retries_unfinished_ones_as_new_attempts() {
        let demo = shipped("demo-live");
        let cells = demo.cells();
        let ids: Vec<String> = cells.iter().map(|c| c.id("demo-live")).collect();
        let first_attempt = format!("{}:a2", ids[1]);
        let existing = Existing::from_runs([
            (ids[0].as_str(), true),
            (ids[1].as_str(), false),
            (first_attempt.as_str(), false),
        ]);
        let pending = demo.pending(&cells, &existing);
        let run_ids: Vec<&str> = pending.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            run_ids,
            [
                format!("{}:a3", ids[1]).as_str(),
                ids[2].as_str(),
                ids[3].as_str()
            ]
        );
        assert_eq!(demo.unfinished_shards(4, &existing), [1, 2, 3]);
        assert_eq!(demo.unfinished_shards(2, &existing), [0, 1]);
        // A spec carries the rule's scaled learning rate and configuration.
        let spec = &pending[0].0;
        let base = demo.rules[&spec.rule].lr.unwrap();
        assert_eq!(
            spec.lr,
            Some(lrid_trainer::scaled_lr(base, spec.batch_size))
        );
        let args = spec.train_args("x");
        assert!(args.windows(2).any(|w| w[0] == "--run-id" && w[1] == "x"));
        let json = serde_json::to_string(spec).unwrap();
        assert_eq!(&serde_json::from_str::<RunSpec>(&json).unwrap(), spec);
    }
}
