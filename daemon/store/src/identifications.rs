//! The `identifications` table: what the daemon's identifiers concluded about a run as its
//! points completed (one row per run × point × identifier × layer, and one with a NULL layer for
//! the run as a whole). Rows arrive from the identification service
//! ([`crate::Store::put_identifications`]), are logged in the write-ahead log before they are
//! acknowledged, queryable at once, and moved to `identifications/*.parquet` at checkpoints,
//! exactly like the observables.
//!
//! The rows are stored in `identification_rows`, whose `probabilities` column maps each rule
//! the identifier knows to its probability. The view `identifications` puts every rule in a
//! column of its own, `p_<rule>` (non-alphanumeric characters become `_`, e.g.
//! `p_feedback_alignment`), NULL where an identifier does not know that rule; it is rebuilt when
//! an identifier brings a rule the view has no column for.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// The table of stored rows.
pub const IDENTIFICATION_ROWS_TABLE: &str = "identification_rows";
/// The view with one probability column per rule.
pub const IDENTIFICATIONS_VIEW: &str = "identifications";

fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Float64, true),
            ])),
            false,
        )),
        false,
    )
}

/// `identification_rows`.
pub static IDENTIFICATIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("point", DataType::UInt32, false),
        // Points the prediction saw (0..points_seen).
        Field::new("points_seen", DataType::UInt32, false),
        Field::new("identifier", DataType::Utf8, false),
        // NULL: the run as a whole.
        Field::new("layer_index", DataType::UInt32, true),
        Field::new("layer_name", DataType::Utf8, true),
        // The most probable rule (NULL when the identification failed).
        Field::new("predicted", DataType::Utf8, true),
        Field::new("probability", DataType::Float64, true),
        Field::new("probabilities", map_type(), true),
        // "ok", or "failed: <why>".
        Field::new("status", DataType::Utf8, false),
        // E.g. that the run's architecture was not in the identifier's training corpus.
        Field::new("note", DataType::Utf8, true),
        Field::new(
            "identified_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]))
});

/// A row of `identifications`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentificationRow {
    pub run_id: String,
    pub point: u32,
    pub points_seen: u32,
    pub identifier: String,
    pub layer_index: Option<u32>,
    pub layer_name: Option<String>,
    /// (rule, probability), in the identifier's rule order; empty when it failed.
    pub probabilities: Vec<(String, f64)>,
    /// "ok", or "failed: <why>".
    pub status: String,
    pub note: Option<String>,
    pub at_ms: i64,
}

impl IdentificationRow {
    /// The most probable rule and its probability (the first on ties).
    pub fn predicted(&self) -> Option<(&str, f64)> {
        self.probabilities
            .iter()
            .fold(None::<(&str, f64)>, |best, (r, p)| match best {
                Some((_, b)) if *p <= b => best,
                _ => Some((r.as_str(), *p)),
            })
    }

    /// Why the row cannot be stored, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        let what = || {
            format!(
                "identification of run '{}' at point {} by '{}'",
                self.run_id, self.point, self.identifier
            )
        };
        if self.identifier.is_empty() {
            return Err(format!("{}: the identifier name is empty", what()));
        }
        if self.status != "ok" && !self.status.starts_with("failed: ") {
            return Err(format!(
                "{}: status must be \"ok\" or \"failed: <why>\"; got {:?}",
                what(),
                self.status
            ));
        }
        if self.status == "ok" && self.probabilities.is_empty() {
            return Err(format!("{}: no probabilities", what()));
        }
        let mut seen = BTreeSet::new();
        for (rule, p) in &self.probabilities {
            if !p.is_finite() || !(0.0..=1.0 + 1e-9).contains(p) {
                return Err(format!(
                    "{}: the probability of '{rule}' is {p}, not in [0, 1]",
                    what()
                ));
            }
            if !seen.insert(rule) {
                return Err(format!("{}: rule '{rule}' given twice", what()));
            }
        }
        Ok(())
    }
}

/// Rows as a batch of [`IDENTIFICATIONS_SCHEMA`].
pub(crate) fn identifications_batch(rows: &[IdentificationRow]) -> RecordBatch {
    let mut run = StringBuilder::new();
    let mut point = UInt32Builder::new();
    let mut seen = UInt32Builder::new();
    let mut identifier = StringBuilder::new();
    let mut index = UInt32Builder::new();
    let mut layer = StringBuilder::new();
    let mut predicted = StringBuilder::new();
    let mut probability = Float64Builder::new();
    let mut map = MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        }),
        StringBuilder::new(),
        Float64Builder::new(),
    );
    let mut status = StringBuilder::new();
    let mut note = StringBuilder::new();
    let mut at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for r in rows {
        run.append_value(&r.run_id);
        point.append_value(r.point);
        seen.append_value(r.points_seen);
        identifier.append_value(&r.identifier);
        index.append_option(r.layer_index);
        layer.append_option(r.layer_name.as_deref());
        let best = r.predicted();
        predicted.append_option(best.map(|b| b.0));
        probability.append_option(best.map(|b| b.1));
        if r.probabilities.is_empty() {
            map.append(false).expect("map row");
        } else {
            for (rule, p) in &r.probabilities {
                map.keys().append_value(rule);
                map.values().append_value(*p);
            }
            map.append(true).expect("map row");
        }
        status.append_value(&r.status);
        note.append_option(r.note.as_deref());
        at.append_value(r.at_ms);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(run.finish()),
        Arc::new(point.finish()),
        Arc::new(seen.finish()),
        Arc::new(identifier.finish()),
        Arc::new(index.finish()),
        Arc::new(layer.finish()),
        Arc::new(predicted.finish()),
        Arc::new(probability.finish()),
        Arc::new(map.finish()),
        Arc::new(status.finish()),
        Arc::new(note.finish()),
        Arc::new(at.finish()),
    ];
    RecordBatch::try_new(IDENTIFICATIONS_SCHEMA.clone(), columns).expect("identifications schema")
}

/// The column of the `identifications` view that holds `rule`'s probability.
pub fn probability_column(rule: &str) -> String {
    let body: String = rule
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("p_{body}")
}

/// `CREATE OR REPLACE VIEW identifications …` with a column per rule of `rules`.
pub(crate) fn view_sql(rules: &BTreeSet<String>) -> String {
    let mut columns = Vec::new();
    let mut names = BTreeSet::new();
    for rule in rules {
        let name = probability_column(rule);
        // Two rules that map to one column name: the first keeps it (the map has both).
        if names.insert(name.clone()) {
            columns.push(format!(
                "probabilities['{}'] AS {name}",
                rule.replace('\'', "''")
            ));
        }
    }
    let per_rule = if columns.is_empty() {
        String::new()
    } else {
        format!("{}, ", columns.join(", "))
    };
    format!(
        "CREATE OR REPLACE VIEW {IDENTIFICATIONS_VIEW} AS SELECT run_id, point, points_seen, \
         identifier, layer_index, layer_name, predicted, probability, {per_rule}probabilities, \
         status, note, identified_at FROM {IDENTIFICATION_ROWS_TABLE}"
    )
}

/// The rules named in a batch of [`IDENTIFICATIONS_SCHEMA`].
pub(crate) fn rules_in(batch: &RecordBatch) -> BTreeSet<String> {
    use arrow::array::{Array, AsArray};
    let mut out = BTreeSet::new();
    if let Some(col) = batch.column_by_name("probabilities") {
        let keys = col.as_map().keys().as_string::<i32>().clone();
        for i in 0..keys.len() {
            out.insert(keys.value(i).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(probabilities: &[(&str, f64)]) -> IdentificationRow {
        IdentificationRow {
            run_id: "r".into(),
            point: 3,
            points_seen: 4,
            identifier: "id".into(),
            layer_index: None,
            layer_name: None,
            probabilities: probabilities
                .iter()
                .map(|(r, p)| (r.to_string(), *p))
                .collect(),
            status: "ok".into(),
            note: None,
            at_ms: 0,
        }
    }

    #[test]
    fn rows_check_and_name_their_best_rule() {
        let r = row(&[("adam", 0.2), ("sgdm", 0.7), ("feedback-alignment", 0.1)]);
        assert_eq!(r.check(), Ok(()));
        assert_eq!(r.predicted(), Some(("sgdm", 0.7)));
        assert!(
            row(&[("adam", 1.5)])
                .check()
                .unwrap_err()
                .contains("not in [0, 1]")
        );
        assert!(row(&[("adam", f64::NAN)]).check().is_err());
        assert!(
            row(&[("adam", 0.5), ("adam", 0.5)])
                .check()
                .unwrap_err()
                .contains("given twice")
        );
        assert!(row(&[]).check().unwrap_err().contains("no probabilities"));
        let failed = IdentificationRow {
            status: "failed: the classifier panicked".into(),
            ..row(&[])
        };
        assert_eq!(failed.check(), Ok(()));
        let bad = IdentificationRow {
            status: "fine".into(),
            ..row(&[("adam", 1.0)])
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn the_batch_holds_the_map_and_the_view_a_column_per_rule() {
        let rows = [
            row(&[("adam", 0.25), ("feedback-alignment", 0.75)]),
            IdentificationRow {
                status: "failed: x".into(),
                ..row(&[])
            },
        ];
        let b = identifications_batch(&rows);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            rules_in(&b),
            BTreeSet::from(["adam".to_string(), "feedback-alignment".to_string()])
        );
        assert_eq!(
            probability_column("feedback-alignment"),
            "p_feedback_alignment"
        );
        let sql = view_sql(&rules_in(&b));
        assert!(sql.contains("probabilities['feedback-alignment'] AS p_feedback_alignment"));
        assert!(view_sql(&BTreeSet::new()).contains("probability, probabilities,"));
    }
}
