//! # lrid-report
//!
//! What `lrid analyze` measured and the report drawn from it.
//!
//! * In: an [`AnalysisResults`] — filled by the analysis (the classifier experiments of
//!   spec §3: main accuracy per classifier × measure, confusions, two-rule pairs, held-out
//!   generalisation, importances, trajectory subsampling, measurement noise, failures) together
//!   with the settings it ran with and a summary of the corpus it saw.
//! * Out: [`report::write_report`] writes into a folder `index.html` (one self-contained page:
//!   every figure as inline SVG, the numbers as tables, the corpus summary and the settings),
//!   each figure again as its own `.svg` file, and `results.json` (the [`AnalysisResults`] as
//!   pretty JSON, format [`RESULTS_FORMAT`], readable back with serde);
//!   [`report::summary_table`] gives the short plain-text accuracy table `lrid analyze` prints.
//!
//! Figures are drawn with `plotters`' SVG backend only (no fonts, no bitmaps): the browser
//! lays the text out.

pub mod report;
pub mod results;

pub use results::*;
