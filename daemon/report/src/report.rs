//! The analysis report: `index.html` (inline SVG figures, tables, corpus summary, settings),
//! one `.svg` file per figure and `results.json`, plus the plain-text summary table that
//! `lrid analyze` prints.
//!
//! Figures follow the paper (spec §3): Fig. 2a main accuracy, 2c confusions, S1 pairwise,
//! 2b held-out generalisation, 3 importances, 4a subsampling, 4b thirds, S2b time-averaged,
//! 5 measurement noise. A part whose data is absent is left out with a sentence saying the
//! experiment was not run; no empty plot is ever drawn. Accuracies are shown as percentages.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::*;

type Fallible<T = ()> = Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Writes `index.html` (one self-contained page: every figure as inline SVG, the tables, the
/// corpus summary, the settings), every figure as a separate `.svg` file, and `results.json`
/// (pretty JSON of `results`) into `dir` (created if missing). Returns the paths written.
pub fn write_report(results: &AnalysisResults, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let page =
        build_page(results).map_err(|e| io::Error::other(format!("drawing the report: {e}")))?;
    let mut written = Vec::with_capacity(page.figures.len() + 2);
    for figure in &page.figures {
        let path = dir.join(&figure.file);
        fs::write(&path, &figure.svg)?;
        written.push(path);
    }
    let json = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    let path = dir.join("results.json");
    fs::write(&path, json + "\n")?;
    written.push(path);
    let path = dir.join("index.html");
    fs::write(&path, &page.html)?;
    written.push(path);
    Ok(written)
}

/// The short plain-text summary table `lrid analyze` prints: one row per classifier, columns
/// weight / act / grad / all as "mean ± sem" percentages, plus a line per failure.
pub fn summary_table(results: &AnalysisResults) -> String {
    let classifiers = classifiers_of(results);
    let mut measures: Vec<String> = MEASURES.iter().map(|m| m.to_string()).collect();
    for m in measures_of(&results.main) {
        if !measures.contains(&m) {
            measures.push(m);
        }
    }
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("classifier".to_string())
            .chain(measures.iter().cloned())
            .collect(),
    ];
    for c in &classifiers {
        let mut row = vec![c.clone()];
        for m in &measures {
            row.push(match find_main(results, c, m) {
                Some(r) => pm(&r.accuracy),
                None => "–".to_string(),
            });
        }
        rows.push(row);
    }
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|j| rows.iter().map(|r| r[j].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let splits = results
        .main
        .iter()
        .map(|r| r.accuracy.values.len())
        .max()
        .unwrap_or(results.settings.splits);
    let _ = writeln!(
        out,
        "Test accuracy (%), mean ± s.e.m. over {splits} split{}; chance {:.1} % ({} rules)",
        if splits == 1 { "" } else { "s" },
        100.0 * chance(results.corpus.rules.len()),
        results.corpus.rules.len()
    );
    if classifiers.is_empty() {
        out.push_str("(no main results)\n");
    }
    for (i, row) in rows.iter().enumerate() {
        if i > 0 || !classifiers.is_empty() {
            let mut line = String::new();
            for (j, cell) in row.iter().enumerate() {
                if j > 0 {
                    line.push_str("  ");
                }
                let pad = widths[j] - cell.chars().count();
                if j == 0 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if let Some(e) = &results.early {
        for c in &e.curves {
            let n = c.accuracy.len();
            let at: Vec<String> = [1, 5, 10, n]
                .into_iter()
                .filter(|&k| k >= 1 && k <= n)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|k| format!("k={k} {}", pct(c.accuracy[k - 1])))
                .collect();
            let _ = writeln!(
                out,
                "Early identification, {} runs held out by {} ({}): {} %",
                c.runs,
                c.held_out,
                e.classifier,
                at.join(", ")
            );
        }
    }
    for f in &results.failures {
        let _ = writeln!(
            out,
            "failed: {} / {}{}: {}",
            f.experiment,
            f.classifier,
            f.measure
                .as_deref()
                .map(|m| format!(" / {m}"))
                .unwrap_or_default(),
            f.reason
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Small helpers: formatting, escaping, ordering
// ---------------------------------------------------------------------------------------------

/// "81.3 ± 1.2" (percentages) or "–" when not finite.
fn pm(a: &Accuracy) -> String {
    pm_values(a.mean, a.sem)
}

fn pm_values(mean: f64, sem: f64) -> String {
    if !mean.is_finite() {
        return "–".to_string();
    }
    if sem.is_finite() {
        format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * sem)
    } else {
        format!("{:.1}", 100.0 * mean)
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}", 100.0 * x)
    } else {
        "–".to_string()
    }
}

fn chance(rules: usize) -> f64 {
    if rules == 0 { 0.0 } else { 1.0 / rules as f64 }
}

/// A number as short text (`3e-5`, `0.01`, `1`).
fn num(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        let s = format!("{x}");
        if s.len() > 8 { format!("{x:.4}") } else { s }
    }
}

/// Escapes text for HTML and SVG (element content and attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A name made safe for a file name.
fn file_part(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() { "x".to_string() } else { out }
}

fn measure_rank(m: &str) -> usize {
    match m {
        "weight" => 0,
        "act" => 1,
        "grad" => 2,
        "all" => 3,
        "position" => 4,
        _ => 5,
    }
}

/// Measures present in `main`, in report order (then any others, by name).
fn measures_of(main: &[MainResult]) -> Vec<String> {
    let mut ms: Vec<String> = Vec::new();
    for r in main {
        if !ms.contains(&r.measure) {
            ms.push(r.measure.clone());
        }
    }
    ms.sort_by(|a, b| measure_rank(a).cmp(&measure_rank(b)).then(a.cmp(b)));
    ms
}

/// Classifiers of the main results: in the settings' order, then any others in order of
/// appearance.
fn classifiers_of(results: &AnalysisResults) -> Vec<String> {
    let present: Vec<&String> = results.main.iter().map(|r| &r.classifier).collect();
    let mut out: Vec<String> = Vec::new();
    for c in &results.settings.classifiers {
        if present.contains(&c) && !out.contains(c) {
            out.push(c.clone());
        }
    }
    for c in present {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

fn find_main<'a>(
    results: &'a AnalysisResults,
    classifier: &str,
    measure: &str,
) -> Option<&'a MainResult> {
    results
        .main
        .iter()
        .find(|r| r.classifier == classifier && r.measure == measure)
}

fn unique<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Wraps a label at `-`, `_`, spaces, `/` and `,` into lines of at most `max_chars`
/// characters (long words are cut), at most `max_lines` lines (the last one ends in `…` when
/// cut short).
fn wrap(label: &str, max_chars: usize, max_lines: usize) -> Vec<String> {
    let max_chars = max_chars.max(3);
    let mut tokens: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in label.chars() {
        cur.push(c);
        if matches!(c, '-' | '_' | ' ' | '/' | ',') {
            tokens.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for tok in tokens {
        let mut tok: Vec<char> = tok.chars().collect();
        while !tok.is_empty() {
            let room = max_chars - line.chars().count();
            // A trailing separator may hang one past the limit.
            let hang = usize::from(
                tok.last()
                    .is_some_and(|c| matches!(c, '-' | '_' | ' ' | '/' | ',')),
            );
            if tok.len() <= room + hang {
                line.extend(tok.drain(..));
            } else if line.is_empty() {
                line.extend(tok.drain(..max_chars));
                lines.push(std::mem::take(&mut line));
            } else {
                lines.push(std::mem::take(&mut line));
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let mut lines: Vec<String> = lines.into_iter().map(|l| l.trim().to_string()).collect();
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("max_lines >= 1");
        let mut chars: Vec<char> = last.chars().collect();
        chars.truncate(max_chars - 1);
        *last = chars.into_iter().collect::<String>() + "…";
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Drawing primitives
// ---------------------------------------------------------------------------------------------

const TITLE: f64 = 22.0;
const PANEL_TITLE: f64 = 18.0;
const LABEL: f64 = 15.0;
const DESC: f64 = 16.0;
const LEGEND_W: u32 = 210;
/// Rough width of one character of a label at `size` (plotters' size; SVG px = size / 1.24).
fn char_w(size: f64) -> f64 {
    0.6 * size / 1.24
}
fn line_h(size: f64) -> i32 {
    (1.25 * size / 1.24).round() as i32
}

const INK: RGBColor = RGBColor(40, 40, 40);
const GRID_SHADE: RGBColor = RGBColor(242, 242, 242);
const REFERENCE_RED: RGBColor = RGBColor(214, 39, 40);
const CHANCE_GREY: RGBColor = RGBColor(90, 90, 90);

/// Tableau 10.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(176, 122, 161),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
    RGBColor(156, 117, 95),
    RGBColor(255, 157, 167),
    RGBColor(186, 176, 172),
    RGBColor(225, 87, 89),
];

fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn measure_color(m: &str) -> RGBColor {
    match m {
        "weight" => PALETTE[0],
        "act" => PALETTE[1],
        "grad" => PALETTE[2],
        "all" => PALETTE[3],
        "position" => PALETTE[8],
        _ => PALETTE[6],
    }
}

/// Sequential colour scale (ColorBrewer Blues) for t in [0, 1].
fn heat_color(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (247.0, 251.0, 255.0),
        (198.0, 219.0, 239.0),
        (107.0, 174.0, 214.0),
        (33.0, 113.0, 181.0),
        (8.0, 48.0, 107.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn text_style(size: f64, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle {
        font: ("sans-serif", size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// Draws `lines` at `pos` (pixels of `area`); `v` places the block (top, centre or bottom).
fn draw_lines(
    area: &Area<'_>,
    lines: &[String],
    pos: (i32, i32),
    size: f64,
    h: HPos,
    v: VPos,
    color: RGBColor,
) -> Fallible {
    let lh = line_h(size);
    let n = lines.len() as i32;
    let top = match v {
        VPos::Top => pos.1,
        VPos::Center => pos.1 - (n * lh) / 2,
        VPos::Bottom => pos.1 - n * lh,
    };
    for (i, l) in lines.iter().enumerate() {
        area.draw(&Text::new(
            l.clone(),
            (pos.0, top + i as i32 * lh + lh / 2),
            text_style(size, color, h, VPos::Center),
        ))?;
    }
    Ok(())
}

fn line_style(color: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

/// Dash and gap lengths (pixels) of a dashed line.
type Dash = Option<(u32, u32)>;
const SOLID: Dash = None;
const DASHED: Dash = Some((7, 5));
/// Line patterns told apart in a legend (solid, dashed, dotted, long dashes).
const PATTERNS: [Dash; 4] = [None, Some((7, 5)), Some((2, 4)), Some((14, 4))];

fn draw_segment(
    area: &Area<'_>,
    a: (i32, i32),
    b: (i32, i32),
    color: RGBColor,
    width: u32,
    dash: Dash,
) -> Fallible {
    if let Some((size, gap)) = dash {
        area.draw(&DashedPathElement::new(
            vec![a, b],
            size,
            gap,
            line_style(color, width),
        ))?;
    } else {
        area.draw(&PathElement::new(vec![a, b], line_style(color, width)))?;
    }
    Ok(())
}

/// A marker of one of a few shapes, centred on `p` (pixels).
fn draw_marker(area: &Area<'_>, p: (i32, i32), kind: usize, color: RGBColor) -> Fallible {
    match kind % 4 {
        0 => area.draw(&Circle::new(p, 4, color.filled()))?,
        1 => area.draw(&TriangleMarker::new(p, 6, color.filled()))?,
        2 => area.draw(&Rectangle::new(
            [(p.0 - 4, p.1 - 4), (p.0 + 4, p.1 + 4)],
            color.filled(),
        ))?,
        _ => {
            area.draw(&Circle::new(p, 4, WHITE.filled()))?;
            area.draw(&Circle::new(p, 4, line_style(color, 2)))?
        }
    }
    Ok(())
}

#[derive(Clone)]
enum Swatch {
    Box(RGBColor),
    Line {
        color: RGBColor,
        dash: Dash,
        marker: Option<usize>,
    },
}

/// A vertical legend in `area` (its own pixel coordinates).
fn draw_legend(area: &Area<'_>, entries: &[(String, Swatch)], top: i32) -> Fallible {
    let (w, _) = area.dim_in_pixel();
    let max_chars = ((w as f64 - 46.0) / char_w(LABEL)).floor() as usize;
    let mut y = top;
    let lh = line_h(LABEL);
    for (label, swatch) in entries {
        let lines = wrap(label, max_chars, 3);
        let cy = y + lh / 2;
        match swatch {
            Swatch::Box(c) => {
                area.draw(&Rectangle::new([(8, cy - 7), (22, cy + 7)], c.filled()))?;
            }
            Swatch::Line {
                color,
                dash,
                marker,
            } => {
                draw_segment(area, (4, cy), (28, cy), *color, 2, *dash)?;
                if let Some(k) = marker {
                    draw_marker(area, (16, cy), *k, *color)?;
                }
            }
        }
        draw_lines(area, &lines, (34, y), LABEL, HPos::Left, VPos::Top, INK)?;
        y += lines.len() as i32 * lh + 8;
    }
    Ok(())
}

/// Renders a figure of `size` pixels into an SVG string.
fn render(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Fallible) -> Fallible<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(buf)
}

/// The title on top of `area`; returns the area below it.
fn titled<'a>(area: &Area<'a>, title: &str, size: f64) -> Fallible<Area<'a>> {
    let (w, _) = area.dim_in_pixel();
    let max_chars = ((w as f64 - 20.0) / (char_w(size) * 1.05)).floor() as usize;
    let lines = wrap(title, max_chars, 2);
    let lh = line_h(size);
    let height = 12 + lines.len() as i32 * lh + 6;
    let style = TextStyle {
        font: ("sans-serif", size).into_font().style(FontStyle::Bold),
        color: INK.to_backend_color(),
        pos: Pos::new(HPos::Center, VPos::Center),
    };
    for (i, l) in lines.iter().enumerate() {
        area.draw(&Text::new(
            l.clone(),
            (w as i32 / 2, 12 + i as i32 * lh + lh / 2),
            style.clone(),
        ))?;
    }
    let (_, below) = area.split_vertically(height);
    Ok(below)
}

// ---------------------------------------------------------------------------------------------
// Chart kinds
// ---------------------------------------------------------------------------------------------

/// One bar value in display units: mean and, when known, its s.e.m.
#[derive(Clone, Copy)]
struct Val {
    mean: f64,
    sem: Option<f64>,
}

fn acc_val(a: &Accuracy) -> Option<Val> {
    a.mean.is_finite().then(|| Val {
        mean: 100.0 * a.mean,
        sem: a.sem.is_finite().then_some(100.0 * a.sem),
    })
}

struct Series {
    label: String,
    color: RGBColor,
    values: Vec<Option<Val>>,
}

struct HLine {
    label: String,
    y: f64,
    color: RGBColor,
    dashed: bool,
}

fn chance_line(rules: usize) -> Option<HLine> {
    (rules > 0).then(|| HLine {
        label: format!(
            "chance ({:.1}\u{a0}%, {rules}\u{a0}rules)",
            100.0 * chance(rules)
        ),
        y: 100.0 * chance(rules),
        color: CHANCE_GREY,
        dashed: true,
    })
}

struct Bars {
    title: String,
    title_size: f64,
    groups: Vec<String>,
    series: Vec<Series>,
    lines: Vec<HLine>,
    x_desc: String,
    y_desc: String,
    /// Shade the last group (a summary such as a mean).
    shade_last: bool,
}

/// Grouped vertical bars with error bars (accuracies, 0–100 %), horizontal lines (chance,
/// reference) and a legend on the right when there is more than one thing to tell apart.
fn draw_bars(area: &Area<'_>, b: &Bars) -> Fallible {
    let area = titled(area, &b.title, b.title_size)?;
    let legend = b.series.len() > 1 || !b.lines.is_empty();
    let (w, _) = area.dim_in_pixel();
    let (plot, legend_area) = if legend {
        let (p, l) = area.split_horizontally(w - LEGEND_W);
        (p, Some(l))
    } else {
        (area.clone(), None)
    };
    let n = b.groups.len().max(1);
    let (pw, _) = plot.dim_in_pixel();
    let slot = (pw as f64 - 100.0) / n as f64;
    let max_chars = ((slot - 6.0) / char_w(LABEL)).floor().max(3.0) as usize;
    let labels: Vec<Vec<String>> = b.groups.iter().map(|g| wrap(g, max_chars, 3)).collect();
    let nlines = labels.iter().map(Vec::len).max().unwrap_or(1) as i32;
    let x_area = 14 + nlines * line_h(LABEL) + 26;

    let mut chart = ChartBuilder::on(&plot)
        .margin_top(8)
        .margin_left(8)
        .margin_right(16)
        .margin_bottom(4)
        .x_label_area_size(x_area)
        .y_label_area_size(62)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(0)
        .y_labels(11)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_label_style(("sans-serif", LABEL))
        .axis_desc_style(("sans-serif", DESC))
        .x_desc(b.x_desc.as_str())
        .y_desc(b.y_desc.as_str())
        .draw()?;
    let screen = plot.use_screen_coord();
    let px = |x: f64, y: f64| chart.backend_coord(&(x, y.clamp(0.0, 100.0)));

    if b.shade_last && n > 1 {
        let a = px(n as f64 - 1.5, 100.0);
        let c = px(n as f64 - 0.5, 0.0);
        screen.draw(&Rectangle::new(
            [(a.0 + 2, a.1), (c.0, c.1)],
            GRID_SHADE.filled(),
        ))?;
    }
    let k = b.series.len().max(1);
    let bw = 0.8 / k as f64;
    for (s, series) in b.series.iter().enumerate() {
        for (g, v) in series.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let x0 = g as f64 - 0.4 + s as f64 * bw;
            let (a, c) = (px(x0, v.mean), px(x0 + bw, 0.0));
            screen.draw(&Rectangle::new(
                [(a.0 + 1, a.1), (c.0 - 1, c.1)],
                series.color.filled(),
            ))?;
            if let Some(sem) = v.sem.filter(|s| *s > 0.0) {
                let xc = x0 + bw / 2.0;
                let (lo, hi) = (px(xc, v.mean - sem), px(xc, v.mean + sem));
                let cap = ((c.0 - a.0) / 5).clamp(2, 6);
                draw_segment(&screen, lo, hi, INK, 1, SOLID)?;
                draw_segment(
                    &screen,
                    (lo.0 - cap, lo.1),
                    (lo.0 + cap, lo.1),
                    INK,
                    1,
                    SOLID,
                )?;
                draw_segment(
                    &screen,
                    (hi.0 - cap, hi.1),
                    (hi.0 + cap, hi.1),
                    INK,
                    1,
                    SOLID,
                )?;
            }
        }
    }
    for l in &b.lines {
        draw_segment(
            &screen,
            px(-0.5, l.y),
            px(n as f64 - 0.5, l.y),
            l.color,
            2,
            if l.dashed { DASHED } else { SOLID },
        )?;
    }
    for (g, lines) in labels.iter().enumerate() {
        let p = px(g as f64, 0.0);
        draw_lines(
            &screen,
            lines,
            (p.0, p.1 + 8),
            LABEL,
            HPos::Center,
            VPos::Top,
            INK,
        )?;
    }
    if let Some(la) = legend_area {
        let mut entries: Vec<(String, Swatch)> = Vec::new();
        if b.series.len() > 1 {
            entries.extend(
                b.series
                    .iter()
                    .map(|s| (s.label.clone(), Swatch::Box(s.color))),
            );
        }
        entries.extend(b.lines.iter().map(|l| {
            (
                l.label.clone(),
                Swatch::Line {
                    color: l.color,
                    dash: if l.dashed { DASHED } else { SOLID },
                    marker: None,
                },
            )
        }));
        draw_legend(&la, &entries, 16)?;
    }
    Ok(())
}

struct Heat {
    title: String,
    title_size: f64,
    rows: Vec<String>,
    cols: Vec<String>,
    /// Colour value in [0, 1] per cell (rows × cols); `None` = no data.
    values: Vec<Vec<Option<f64>>>,
    /// Cell text lines (the first larger).
    text: Vec<Vec<Vec<String>>>,
    x_desc: String,
    y_desc: String,
    scale: String,
}

/// A heat map with numbers in the cells, rows top to bottom, and a colour bar (0–100 %).
fn draw_heat(area: &Area<'_>, h: &Heat) -> Fallible {
    let area = titled(area, &h.title, h.title_size)?;
    let (w, _) = area.dim_in_pixel();
    let (plot, bar) = area.split_horizontally(w - 80);
    let (nr, nc) = (h.rows.len().max(1), h.cols.len().max(1));
    let row_labels: Vec<Vec<String>> = h.rows.iter().map(|r| wrap(r, 16, 2)).collect();
    let y_chars = row_labels
        .iter()
        .flatten()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1);
    let y_area = (y_chars as f64 * char_w(LABEL)).ceil() as i32 + 14 + 30;
    let (pw, _) = plot.dim_in_pixel();
    let slot = (pw as f64 - y_area as f64 - 20.0) / nc as f64;
    let max_chars = ((slot - 6.0) / char_w(LABEL)).floor().max(3.0) as usize;
    let col_labels: Vec<Vec<String>> = h.cols.iter().map(|c| wrap(c, max_chars, 3)).collect();
    let nlines = col_labels.iter().map(Vec::len).max().unwrap_or(1) as i32;
    let x_area = 12 + nlines * line_h(LABEL) + 26;

    let mut chart = ChartBuilder::on(&plot)
        .margin_top(8)
        .margin_left(8)
        .margin_right(12)
        .margin_bottom(4)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(-0.5..nc as f64 - 0.5, -0.5..nr as f64 - 0.5)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .axis_desc_style(("sans-serif", DESC))
        .x_desc(h.x_desc.as_str())
        .y_desc(h.y_desc.as_str())
        .draw()?;
    let screen = plot.use_screen_coord();
    // Row i is drawn at y = nr - 1 - i so that the first row is on top.
    let px = |c: f64, r: f64| chart.backend_coord(&(c, nr as f64 - 1.0 - r));
    let cell_h = (px(0.0, 1.0).1 - px(0.0, 0.0).1).abs();
    let cell_w = (px(1.0, 0.0).0 - px(0.0, 0.0).0).abs();
    let big = (cell_h as f64 * 0.32)
        .min(cell_w as f64 / 5.0)
        .clamp(10.0, 20.0);
    let small = (big * 0.75).max(10.0);
    for i in 0..nr {
        for j in 0..nc {
            let v = h.values.get(i).and_then(|r| r.get(j)).copied().flatten();
            let a = px(j as f64 - 0.5, i as f64 - 0.5);
            let c = px(j as f64 + 0.5, i as f64 + 0.5);
            let fill = match v {
                Some(t) => heat_color(t),
                None => RGBColor(225, 225, 225),
            };
            screen.draw(&Rectangle::new([a, c], fill.filled()))?;
            screen.draw(&Rectangle::new([a, c], line_style(WHITE, 2)))?;
            let ink = if v.is_some_and(|t| t > 0.55) {
                WHITE
            } else {
                BLACK
            };
            let centre = px(j as f64, i as f64);
            let lines = h
                .text
                .get(i)
                .and_then(|r| r.get(j))
                .cloned()
                .unwrap_or_else(|| vec!["–".to_string()]);
            let show_second = lines.len() > 1 && cell_h as f64 > big * 2.6;
            if show_second {
                let lh_big = line_h(big);
                let lh_small = line_h(small);
                let top = centre.1 - (lh_big + lh_small) / 2;
                screen.draw(&Text::new(
                    lines[0].clone(),
                    (centre.0, top + lh_big / 2),
                    text_style(big, ink, HPos::Center, VPos::Center),
                ))?;
                draw_lines(
                    &screen,
                    &lines[1..2],
                    (centre.0, top + lh_big),
                    small,
                    HPos::Center,
                    VPos::Top,
                    ink,
                )?;
            } else {
                screen.draw(&Text::new(
                    lines[0].clone(),
                    centre,
                    text_style(big, ink, HPos::Center, VPos::Center),
                ))?;
            }
        }
    }
    for (j, lines) in col_labels.iter().enumerate() {
        let p = px(j as f64, nr as f64 - 0.5);
        draw_lines(
            &screen,
            lines,
            (p.0, p.1 + 8),
            LABEL,
            HPos::Center,
            VPos::Top,
            INK,
        )?;
    }
    for (i, lines) in row_labels.iter().enumerate() {
        let p = px(-0.5, i as f64);
        draw_lines(
            &screen,
            lines,
            (p.0 - 8, p.1),
            LABEL,
            HPos::Right,
            VPos::Center,
            INK,
        )?;
    }
    // Colour bar.
    let top = px(0.0, -0.5).1;
    let bottom = px(0.0, nr as f64 - 0.5).1;
    let bar_screen = bar.use_screen_coord();
    let x0 = bar.get_base_pixel().0 + 6;
    let steps = 50;
    let span = (bottom - top).max(1);
    for s in 0..steps {
        let y1 = bottom - span * s / steps;
        let y0 = bottom - span * (s + 1) / steps;
        bar_screen.draw(&Rectangle::new(
            [(x0, y0), (x0 + 16, y1)],
            heat_color((s as f64 + 0.5) / steps as f64).filled(),
        ))?;
    }
    bar_screen.draw(&Rectangle::new(
        [(x0, top), (x0 + 16, bottom)],
        line_style(INK, 1),
    ))?;
    for (t, label) in [(0.0, "0"), (0.5, "50"), (1.0, "100")] {
        let y = bottom - (span as f64 * t).round() as i32;
        draw_segment(&bar_screen, (x0 + 16, y), (x0 + 20, y), INK, 1, SOLID)?;
        bar_screen.draw(&Text::new(
            label,
            (x0 + 23, y),
            text_style(13.0, INK, HPos::Left, VPos::Center),
        ))?;
    }
    bar_screen.draw(&Text::new(
        h.scale.clone(),
        (x0 + 54, (top + bottom) / 2),
        text_style(13.0, INK, HPos::Center, VPos::Center).transform(FontTransform::Rotate90),
    ))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

struct Figure {
    file: String,
    svg: String,
}

struct Page {
    html: String,
    figures: Vec<Figure>,
    toc: Vec<(String, String)>,
}

impl Page {
    /// Adds a figure (file name made unique) and writes it inline into the page.
    fn figure(&mut self, file: &str, svg: String, class: &str) {
        let mut name = file.to_string();
        let mut k = 2;
        while self.figures.iter().any(|f| f.file == name) {
            name = format!("{}-{k}.svg", file.trim_end_matches(".svg"));
            k += 1;
        }
        let _ = writeln!(
            self.html,
            "<figure class=\"{class}\">{svg}<figcaption><a href=\"{0}\">{0}</a></figcaption></figure>",
            esc(&name)
        );
        self.figures.push(Figure { file: name, svg });
    }

    fn section(&mut self, id: &str, title: &str, explanation: &str) {
        self.toc.push((id.to_string(), title.to_string()));
        let _ = write!(
            self.html,
            "<section id=\"{id}\">\n<h2>{}</h2>\n<p class=\"explain\">{explanation}</p>\n",
            esc(title)
        );
    }

    fn end_section(&mut self) {
        self.html.push_str("</section>\n");
    }

    fn not_run(&mut self, sentence: &str) {
        let _ = writeln!(self.html, "<p class=\"notrun\">{}</p>", esc(sentence));
    }
}

/// An HTML table; cells are escaped. The first row is the header.
fn table(rows: &[Vec<String>], class: &str) -> String {
    let mut out = format!("<table class=\"{class}\">\n");
    for (i, row) in rows.iter().enumerate() {
        out.push_str("<tr>");
        for (j, cell) in row.iter().enumerate() {
            let tag = if i == 0 || (j == 0 && class.contains("rowhead")) {
                "th"
            } else {
                "td"
            };
            let align = if tag == "td" && looks_numeric(cell) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<{tag}{align}>{}</{tag}>", esc(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Whether a table cell holds a number (right-aligned): `87.3 ± 1.2`, `1200`, `-0.5`, `–`.
fn looks_numeric(cell: &str) -> bool {
    let mut chars = cell.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('-' | '–') => chars.next().is_none_or(|c| c.is_ascii_digit()),
        _ => false,
    }
}

const CSS: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 24px 60px; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin: 28px 0 4px; }
h2 { font-size: 1.35em; margin-top: 44px; border-bottom: 2px solid #4e79a7; padding-bottom: 4px; }
h3 { font-size: 1.1em; margin-top: 26px; }
.sub { color: #555; margin: 0 0 18px; }
nav ol { columns: 2; margin: 8px 0 0; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 14px 0; }
figure svg { width: 100%; height: auto; max-width: 100%; display: block; border: 1px solid #e4e4e4; }
figure.half { display: inline-block; width: 49%; vertical-align: top; margin: 6px 0; }
figcaption { font-size: 0.8em; color: #777; }
p.explain { max-width: 60em; }
p.notrun { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 12px; }
details { margin: 6px 0 14px; }
summary { cursor: pointer; color: #345; }
code { font-size: 0.92em; }
.failures td { color: #8b0000; }
"#;

fn build_page(r: &AnalysisResults) -> Fallible<Page> {
    let mut page = Page {
        html: String::new(),
        figures: Vec::new(),
        toc: Vec::new(),
    };
    settings_section(&mut page, r);
    corpus_section(&mut page, r);
    main_section(&mut page, r)?;
    confusion_section(&mut page, r)?;
    pairwise_section(&mut page, r)?;
    held_out_section(&mut page, r)?;
    importance_section(&mut page, r)?;
    trajectory_section(&mut page, r)?;
    noise_section(&mut page, r)?;
    early_section(&mut page, r)?;
    failures_section(&mut page, r);

    let date = r.created_at.split('T').next().unwrap_or(&r.created_at);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>lrid analysis {0} ({1})</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>lrid analysis “{0}”</h1>\n<p class=\"sub\">{2} · {3} example{4} from {5} run{6} · \
         {7} rule{8} · wall time {9}</p>\n",
        esc(&r.name),
        esc(date),
        esc(&r.created_at),
        r.corpus.examples,
        if r.corpus.examples == 1 { "" } else { "s" },
        r.corpus.runs,
        if r.corpus.runs == 1 { "" } else { "s" },
        r.corpus.rules.len(),
        if r.corpus.rules.len() == 1 { "" } else { "s" },
        esc(&duration(r.seconds)),
    );
    html.push_str("<nav><ol>\n");
    for (id, title) in &page.toc {
        let _ = writeln!(html, "<li><a href=\"#{id}\">{}</a></li>", esc(title));
    }
    html.push_str("</ol></nav>\n");
    html.push_str(&page.html);
    html.push_str("</body>\n</html>\n");
    page.html = html;
    Ok(page)
}

fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".to_string();
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn settings_section(page: &mut Page, r: &AnalysisResults) {
    page.section(
        "settings",
        "Settings",
        "How this analysis ran: the corpus selection, the measurement model of the main \
         experiments, the protocol of spec §3.1–3.2 (category-balanced outer splits, inner \
         stratified cross-validation for model selection) and the seed of every split and fit.",
    );
    let s = &r.settings;
    let mut rows = vec![
        vec!["setting".to_string(), "value".to_string()],
        vec!["analysis".into(), r.name.clone()],
        vec!["created".into(), r.created_at.clone()],
        vec!["server".into(), s.server.clone()],
        vec![
            "corpus selection (--where)".into(),
            s.where_predicate
                .clone()
                .unwrap_or_else(|| "(all closed runs)".into()),
        ],
        vec!["measurement model (--model)".into(), s.model.clone()],
        vec!["trajectory points per example".into(), s.points.to_string()],
        vec!["grid".into(), s.grid.clone()],
        vec!["classifiers".into(), s.classifiers.join(", ")],
        vec!["experiments".into(), s.experiments.join(", ")],
        vec!["outer splits".into(), s.splits.to_string()],
        vec!["test fraction per rule".into(), num(s.test_fraction)],
        vec!["inner CV folds".into(), s.folds.to_string()],
        vec!["seed".into(), s.seed.to_string()],
        vec![
            "z-scored features".into(),
            if s.zscore { "yes" } else { "no" }.into(),
        ],
        vec!["wall time".into(), duration(r.seconds)],
    ];
    rows.extend(
        r.experiment_seconds
            .iter()
            .map(|(e, &secs)| vec![format!("wall time: {e}"), duration(secs)]),
    );
    rows.push(vec!["results format".into(), r.format.to_string()]);
    page.html.push_str(&table(&rows, "rowhead"));
    page.end_section();
}

fn count_table(title: &str, map: &BTreeMap<String, usize>) -> String {
    let mut rows = vec![vec![title.to_string(), "count".to_string()]];
    rows.extend(map.iter().map(|(k, v)| vec![k.clone(), v.to_string()]));
    table(&rows, "nums")
}

fn corpus_section(page: &mut Page, r: &AnalysisResults) {
    page.section(
        "corpus",
        "Corpus",
        "What the classifiers saw: one example is one observed layer of one closed training run, \
         described by the trajectories of its statistics (spec §2). Labels are the learning \
         rules, in the order below (the order of the confusion matrices).",
    );
    let c = &r.corpus;
    let rows = [
        vec!["quantity".to_string(), "value".to_string()],
        vec!["examples (layers)".into(), c.examples.to_string()],
        vec!["runs".into(), c.runs.to_string()],
        vec!["learning rules".into(), c.rules.join(", ")],
        vec![
            "measurement models in the corpus".into(),
            c.models.join(", "),
        ],
        vec![
            "feature columns (all measures)".into(),
            c.features.to_string(),
        ],
        vec!["excluded runs".into(), c.excluded.len().to_string()],
    ];
    page.html.push_str(&table(&rows, "rowhead"));
    page.html
        .push_str("<div style=\"display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start\">\n");
    page.html
        .push_str(&count_table("rule (examples)", &c.examples_per_rule));
    page.html.push_str(&count_table(
        "architecture (runs)",
        &c.runs_per_architecture,
    ));
    page.html
        .push_str(&count_table("task (runs)", &c.runs_per_task));
    page.html.push_str("</div>\n");
    if c.excluded.is_empty() {
        page.html.push_str("<p>No run was excluded.</p>\n");
    } else {
        page.html.push_str("<h3>Excluded runs</h3>\n");
        let mut rows = vec![vec!["run".to_string(), "reason".to_string()]];
        rows.extend(
            c.excluded
                .iter()
                .map(|e| vec![e.run_id.clone(), e.reason.clone()]),
        );
        page.html.push_str(&table(&rows, "excluded"));
    }
    page.end_section();
}

fn main_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "main",
        "Test accuracy per measure (Fig. 2a)",
        "Each classifier is trained to name the learning rule from one measure's statistics \
         (weights, activations, layer-wise activity changes “grad”, or all together) and tested \
         on held-out examples of each outer split. Bars are the mean test accuracy over the \
         splits, error bars the standard error of the mean; the dashed line is chance \
         (1 / number of rules). This is the paper's Fig. 2a.",
    );
    if r.main.is_empty() {
        page.not_run("The main classification experiment was not run (no results).");
        page.end_section();
        return Ok(());
    }
    let classifiers = classifiers_of(r);
    let measures = measures_of(&r.main);
    let series: Vec<Series> = classifiers
        .iter()
        .enumerate()
        .map(|(i, c)| Series {
            label: c.clone(),
            color: series_color(i),
            values: measures
                .iter()
                .map(|m| find_main(r, c, m).and_then(|x| acc_val(&x.accuracy)))
                .collect(),
        })
        .collect();
    let bars = Bars {
        title: "Test accuracy per measure (Fig. 2a)".into(),
        title_size: TITLE,
        groups: measures.clone(),
        series,
        lines: chance_line(r.corpus.rules.len()).into_iter().collect(),
        x_desc: "measure".into(),
        y_desc: "test accuracy (%)".into(),
        shade_last: false,
    };
    let svg = render((1000, 520), |a| draw_bars(a, &bars))?;
    page.figure("main_accuracy.svg", svg, "");

    let mut rows = vec![
        std::iter::once("classifier".to_string())
            .chain(measures.iter().map(|m| format!("{m} (%)")))
            .collect::<Vec<_>>(),
    ];
    for c in &classifiers {
        let mut row = vec![c.clone()];
        for m in &measures {
            row.push(
                find_main(r, c, m)
                    .map(|x| pm(&x.accuracy))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        rows.push(row);
    }
    page.html.push_str(&table(&rows, "nums"));

    // Per-split details.
    page.html.push_str(
        "<details><summary>Per-split results (accuracy, sizes, chosen configuration)</summary>\n",
    );
    let mut rows = vec![vec![
        "classifier".to_string(),
        "measure".into(),
        "split".into(),
        "train".into(),
        "test".into(),
        "accuracy (%)".into(),
        "configurations tried".into(),
        "chosen configuration".into(),
        "fit (s)".into(),
    ]];
    for m in &r.main {
        for s in &m.splits {
            rows.push(vec![
                m.classifier.clone(),
                m.measure.clone(),
                s.split.to_string(),
                s.train_examples.to_string(),
                s.test_examples.to_string(),
                pct(s.accuracy),
                s.cv.len().to_string(),
                s.config.to_string(),
                format!("{:.1}", s.fit_seconds),
            ]);
        }
    }
    page.html.push_str(&table(&rows, "nums"));
    page.html.push_str("</details>\n");
    page.end_section();
    Ok(())
}

/// Rule names for a matrix of `n` rows (`rules` when it fits).
fn rule_names(rules: &[String], n: usize) -> Vec<String> {
    if rules.len() == n {
        rules.to_vec()
    } else {
        (0..n)
            .map(|i| rules.get(i).cloned().unwrap_or_else(|| format!("rule {i}")))
            .collect()
    }
}

fn confusion_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "confusion",
        "Confusion matrices (Fig. 2c)",
        "Which rules are mistaken for which: the confusion matrices summed over the outer splits, \
         each row (true rule) normalised to 100 %, columns the predicted rule; the diagonal is \
         the per-rule accuracy. Small numbers under the percentages are counts of test examples. \
         This is the paper's Fig. 2c (there for the Random Forest on all measures).",
    );
    let items: Vec<&MainResult> = {
        let mut v: Vec<&MainResult> = r.main.iter().filter(|m| !m.confusion.is_empty()).collect();
        let classifiers = classifiers_of(r);
        v.sort_by_key(|m| {
            (
                classifiers
                    .iter()
                    .position(|c| *c == m.classifier)
                    .unwrap_or(usize::MAX),
                measure_rank(&m.measure),
            )
        });
        v
    };
    if items.is_empty() {
        page.not_run("No confusion matrix was recorded: the main experiment was not run.");
        page.end_section();
        return Ok(());
    }
    let mut current = String::new();
    for m in items {
        if m.classifier != current {
            current = m.classifier.clone();
            let _ = writeln!(page.html, "<h3>{}</h3>", esc(&current));
        }
        let n = m.confusion.len();
        let names = rule_names(&r.corpus.rules, n);
        let mut values = Vec::with_capacity(n);
        let mut text = Vec::with_capacity(n);
        for row in &m.confusion {
            let total: u64 = row.iter().sum();
            values.push(
                row.iter()
                    .map(|&c| (total > 0).then(|| c as f64 / total as f64))
                    .collect(),
            );
            text.push(
                row.iter()
                    .map(|&c| {
                        if total > 0 {
                            vec![
                                format!("{:.1}", 100.0 * c as f64 / total as f64),
                                format!("n = {c}"),
                            ]
                        } else {
                            vec!["–".into()]
                        }
                    })
                    .collect(),
            );
        }
        let ncols = m.confusion.iter().map(Vec::len).max().unwrap_or(0);
        let heat = Heat {
            title: format!("Confusion, {} on {} (Fig. 2c)", m.classifier, m.measure),
            title_size: PANEL_TITLE,
            rows: names.clone(),
            cols: rule_names(&r.corpus.rules, ncols),
            values,
            text,
            x_desc: "predicted rule".into(),
            y_desc: "true rule".into(),
            scale: "% of true rule".into(),
        };
        let side = (300 + 60 * n as u32).min(900);
        let svg = render((side + 60, side), |a| draw_heat(a, &heat))?;
        page.figure(
            &format!(
                "confusion_{}_{}.svg",
                file_part(&m.classifier),
                file_part(&m.measure)
            ),
            svg,
            "half",
        );
    }
    page.html
        .push_str("<details><summary>Confusion counts (rows true, columns predicted)</summary>\n");
    for m in r.main.iter().filter(|m| !m.confusion.is_empty()) {
        let _ = writeln!(
            page.html,
            "<p><b>{}</b> on <b>{}</b></p>",
            esc(&m.classifier),
            esc(&m.measure)
        );
        let names = rule_names(
            &r.corpus.rules,
            m.confusion
                .len()
                .max(m.confusion.iter().map(Vec::len).max().unwrap_or(0)),
        );
        let mut rows = vec![
            std::iter::once("true \\ predicted".to_string())
                .chain(names.iter().cloned())
                .collect::<Vec<_>>(),
        ];
        for (i, row) in m.confusion.iter().enumerate() {
            rows.push(
                std::iter::once(names[i].clone())
                    .chain(row.iter().map(u64::to_string))
                    .collect(),
            );
        }
        page.html.push_str(&table(&rows, "nums rowhead"));
    }
    page.html.push_str("</details>\n");
    page.end_section();
    Ok(())
}

fn pairwise_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "pairwise",
        "Two-rule classification (Fig. S1)",
        "Can each pair of rules be told apart? For every pair, a two-rule classifier (the \
         split's chosen configuration, trained and tested on that split's examples of the two \
         rules) per measure; mean ± s.e.m. over the splits, chance 50 %. This is the paper's \
         Fig. S1.",
    );
    let classifiers = classifiers_of(r);
    let mut any = false;
    for c in &classifiers {
        let results: Vec<&MainResult> = {
            let mut v: Vec<&MainResult> = r
                .main
                .iter()
                .filter(|m| m.classifier == *c && !m.pairwise.is_empty())
                .collect();
            v.sort_by_key(|m| measure_rank(&m.measure));
            v
        };
        if results.is_empty() {
            continue;
        }
        any = true;
        let pairs: Vec<(String, String)> = unique(
            results
                .iter()
                .flat_map(|m| m.pairwise.iter().map(|p| (p.a.clone(), p.b.clone()))),
        );
        let measures: Vec<String> = results.iter().map(|m| m.measure.clone()).collect();
        let series: Vec<Series> = results
            .iter()
            .map(|m| Series {
                label: m.measure.clone(),
                color: measure_color(&m.measure),
                values: pairs
                    .iter()
                    .map(|(a, b)| {
                        m.pairwise
                            .iter()
                            .find(|p| p.a == *a && p.b == *b)
                            .and_then(|p| acc_val(&p.accuracy))
                    })
                    .collect(),
            })
            .collect();
        let bars = Bars {
            title: format!("Two-rule test accuracy, {c} (Fig. S1)"),
            title_size: TITLE,
            groups: pairs.iter().map(|(a, b)| format!("{a} vs {b}")).collect(),
            series,
            lines: chance_line(2).into_iter().collect(),
            x_desc: "rule pair".into(),
            y_desc: "test accuracy (%)".into(),
            shade_last: false,
        };
        let width = (600 + 110 * pairs.len() as u32).clamp(900, 1600);
        let svg = render((width, 520), |a| draw_bars(a, &bars))?;
        let _ = writeln!(page.html, "<h3>{}</h3>", esc(c));
        page.figure(&format!("pairwise_{}.svg", file_part(c)), svg, "");
        let mut rows = vec![
            std::iter::once("pair".to_string())
                .chain(measures.iter().map(|m| format!("{m} (%)")))
                .collect::<Vec<_>>(),
        ];
        for (a, b) in &pairs {
            let mut row = vec![format!("{a} vs {b}")];
            for m in &results {
                row.push(
                    m.pairwise
                        .iter()
                        .find(|p| p.a == *a && p.b == *b)
                        .map(|p| pm(&p.accuracy))
                        .unwrap_or_else(|| "–".into()),
                );
            }
            rows.push(row);
        }
        page.html.push_str(&table(&rows, "nums"));
    }
    if !any {
        page.not_run("The pairwise (two-rule) experiment was not run.");
    }
    page.end_section();
    Ok(())
}

fn factor_rank(f: &str) -> usize {
    match f {
        "architecture" => 0,
        "curriculum" => 1,
        "task" => 2,
        _ => 3,
    }
}

fn held_out_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "held-out",
        "Generalisation to held-out architectures, curricula and tasks (Fig. 2b)",
        "Does the classifier generalise beyond what it was trained on? For each factor, every \
         value in turn (one architecture, one curriculum = batch size × data seed, or one task) \
         is left out of training and used as the test set. Bars are the accuracy on each held-out \
         value; the shaded last bar is their mean ± s.e.m. The red line is the same classifier's \
         accuracy on all measures with ordinary splits (the reference of the paper's Fig. 2b); \
         the dashed line is chance.",
    );
    let valid: Vec<&HeldOutResult> = r.held_out.iter().filter(|h| !h.values.is_empty()).collect();
    if valid.is_empty() {
        page.not_run("The held-out generalisation experiment was not run.");
        page.end_section();
        return Ok(());
    }
    let mut factors: Vec<String> = unique(valid.iter().map(|h| h.factor.clone()));
    factors.sort_by(|a, b| factor_rank(a).cmp(&factor_rank(b)).then(a.cmp(b)));
    let classifiers: Vec<String> = unique(valid.iter().map(|h| h.classifier.clone()));
    let mut panels: Vec<Bars> = Vec::new();
    for f in &factors {
        let of: Vec<&&HeldOutResult> = valid.iter().filter(|h| h.factor == *f).collect();
        let values: Vec<String> = unique(
            of.iter()
                .flat_map(|h| h.values.iter().map(|v| v.value.clone())),
        );
        let mut groups = values.clone();
        groups.push("mean ± s.e.m.".into());
        let mut series = Vec::new();
        let mut lines = Vec::new();
        for (ci, c) in classifiers.iter().enumerate() {
            let Some(h) = of.iter().find(|h| h.classifier == *c) else {
                continue;
            };
            let mut vals: Vec<Option<Val>> = values
                .iter()
                .map(|v| {
                    h.values
                        .iter()
                        .find(|x| x.value == *v)
                        .filter(|x| x.accuracy.is_finite())
                        .map(|x| Val {
                            mean: 100.0 * x.accuracy,
                            sem: None,
                        })
                })
                .collect();
            vals.push(acc_val(&h.accuracy));
            series.push(Series {
                label: c.clone(),
                color: series_color(classifiers_of(r).iter().position(|x| x == c).unwrap_or(ci)),
                values: vals,
            });
            if let Some(reference) = h.reference.filter(|x| x.is_finite()) {
                lines.push(HLine {
                    label: if classifiers.len() > 1 {
                        format!(
                            "{c}, all measures, ordinary splits ({:.1}\u{a0}%)",
                            100.0 * reference
                        )
                    } else {
                        format!(
                            "all measures, ordinary splits ({:.1}\u{a0}%)",
                            100.0 * reference
                        )
                    },
                    y: 100.0 * reference,
                    color: REFERENCE_RED,
                    dashed: false,
                });
            }
        }
        lines.extend(chance_line(r.corpus.rules.len()));
        panels.push(Bars {
            title: format!("held-out {f}"),
            title_size: PANEL_TITLE,
            groups,
            series,
            lines,
            x_desc: format!("held-out {f}"),
            y_desc: "test accuracy (%)".into(),
            shade_last: true,
        });
    }
    let panel_h = 360u32;
    let title = if classifiers.len() == 1 {
        format!(
            "Generalisation to held-out values, {} (Fig. 2b)",
            classifiers[0]
        )
    } else {
        "Generalisation to held-out values (Fig. 2b)".to_string()
    };
    let svg = render((1100, 60 + panel_h * panels.len() as u32), |a| {
        let body = titled(a, &title, TITLE)?;
        let (_, h) = body.dim_in_pixel();
        let each = h / panels.len() as u32;
        let mut rest = body;
        for p in &panels {
            let (top, bottom) = rest.split_vertically(each);
            draw_bars(&top, p)?;
            rest = bottom;
        }
        Ok(())
    })?;
    page.figure("held_out.svg", svg, "");

    let mut rows = vec![vec![
        "classifier".to_string(),
        "factor".into(),
        "held-out value".into(),
        "train".into(),
        "test".into(),
        "accuracy (%)".into(),
    ]];
    let mut sorted = valid.clone();
    sorted.sort_by_key(|h| factor_rank(&h.factor));
    for h in sorted {
        for v in &h.values {
            rows.push(vec![
                h.classifier.clone(),
                h.factor.clone(),
                v.value.clone(),
                v.train_examples.to_string(),
                v.test_examples.to_string(),
                pct(v.accuracy),
            ]);
        }
        rows.push(vec![
            h.classifier.clone(),
            h.factor.clone(),
            "mean ± s.e.m.".into(),
            String::new(),
            String::new(),
            pm(&h.accuracy),
        ]);
        rows.push(vec![
            h.classifier.clone(),
            h.factor.clone(),
            "reference: all measures, ordinary splits".into(),
            String::new(),
            String::new(),
            h.reference.map(pct).unwrap_or_else(|| "–".into()),
        ]);
    }
    page.html.push_str(&table(&rows, "nums"));
    page.end_section();
    Ok(())
}

/// Fig. 3 bars: features sorted by measure then by decreasing mean. `scale` multiplies the
/// values (100 for accuracy drops in percentage points).
fn importance_figure(
    title: &str,
    x_desc: &str,
    items: &[FeatureImportance],
    scale: f64,
) -> Fallible<String> {
    let mut items: Vec<&FeatureImportance> = items.iter().filter(|f| f.mean.is_finite()).collect();
    items.sort_by(|a, b| {
        measure_rank(&a.measure)
            .cmp(&measure_rank(&b.measure))
            .then(a.measure.cmp(&b.measure))
            .then(
                b.mean
                    .partial_cmp(&a.mean)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
    });
    let n = items.len().max(1);
    let lo = items
        .iter()
        .map(|f| scale * (f.mean - f.sem.max(0.0)))
        .fold(0.0f64, f64::min);
    let hi = items
        .iter()
        .map(|f| {
            scale
                * (f.mean
                    + if f.sem.is_finite() {
                        f.sem.max(0.0)
                    } else {
                        0.0
                    })
        })
        .fold(0.0f64, f64::max);
    let span = (hi - lo).max(1e-9);
    let (lo, hi) = (
        if lo < 0.0 { lo - 0.05 * span } else { 0.0 },
        hi + 0.05 * span,
    );
    let label_chars = items
        .iter()
        .map(|f| f.feature.chars().count())
        .max()
        .unwrap_or(4);
    let y_area = (label_chars as f64 * char_w(LABEL)).ceil() as i32 + 16;
    let height = 150 + 24 * n as u32;
    let measures: Vec<String> = unique(items.iter().map(|f| f.measure.clone()));
    render((1000, height), |root| {
        let area = titled(root, title, TITLE)?;
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w - 170);
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(8)
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(4)
            .x_label_area_size(58)
            .y_label_area_size(y_area)
            .build_cartesian_2d(lo..hi, -0.5..n as f64 - 0.5)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(0)
            .x_labels(8)
            .x_label_style(("sans-serif", LABEL))
            .axis_desc_style(("sans-serif", DESC))
            .x_desc(x_desc)
            .draw()?;
        let screen = plot.use_screen_coord();
        let px = |x: f64, row: f64| chart.backend_coord(&(x.clamp(lo, hi), n as f64 - 1.0 - row));
        for (i, f) in items.iter().enumerate() {
            let row = i as f64;
            let color = measure_color(&f.measure);
            let a = px(0.0, row - 0.36);
            let b = px(scale * f.mean, row + 0.36);
            screen.draw(&Rectangle::new([a, b], color.filled()))?;
            if f.sem.is_finite() && f.sem > 0.0 {
                let l = px(scale * (f.mean - f.sem), row);
                let r = px(scale * (f.mean + f.sem), row);
                draw_segment(&screen, l, r, INK, 1, SOLID)?;
                draw_segment(&screen, (l.0, l.1 - 4), (l.0, l.1 + 4), INK, 1, SOLID)?;
                draw_segment(&screen, (r.0, r.1 - 4), (r.0, r.1 + 4), INK, 1, SOLID)?;
            }
            let p = px(lo, row);
            screen.draw(&Text::new(
                f.feature.clone(),
                (p.0 - 8, p.1),
                text_style(LABEL, INK, HPos::Right, VPos::Center),
            ))?;
        }
        if lo < 0.0 {
            draw_segment(
                &screen,
                px(0.0, -0.5),
                px(0.0, n as f64 - 0.5),
                INK,
                1,
                SOLID,
            )?;
        }
        let entries: Vec<(String, Swatch)> = measures
            .iter()
            .map(|m| (m.clone(), Swatch::Box(measure_color(m))))
            .collect();
        draw_legend(&legend, &entries, 16)?;
        Ok(())
    })
}

fn importance_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "importances",
        "Which statistics matter (Fig. 3)",
        "How much each statistic contributes to the all-measure classifier. Impurity importance: \
         the mean decrease in Gini impurity attributed to a statistic, summed over its trajectory \
         (position features individually), mean ± s.e.m. over every tree of every split (the \
         paper's Fig. 3). Permutation importance: the drop in test accuracy when a statistic's \
         whole trajectory is shuffled across test examples, mean ± s.e.m. over the splits. Bars \
         are grouped by measure and sorted within it.",
    );
    let Some(imp) = &r.importances else {
        page.not_run("The importance experiment was not run.");
        page.end_section();
        return Ok(());
    };
    let _ = writeln!(
        page.html,
        "<p>Classifier: <b>{}</b>.</p>",
        esc(&imp.classifier)
    );
    if !imp.impurity.iter().any(|f| f.mean.is_finite()) {
        page.not_run("Impurity importances were not recorded (not run for this classifier).");
    } else {
        let svg = importance_figure(
            &format!(
                "Impurity importance per statistic, {} (Fig. 3)",
                imp.classifier
            ),
            "impurity importance (mean decrease in Gini, fraction)",
            &imp.impurity,
            1.0,
        )?;
        page.figure("importances.svg", svg, "");
    }
    if !imp.permutation.iter().any(|f| f.mean.is_finite()) {
        page.not_run("Permutation importances were not run.");
    } else {
        let svg = importance_figure(
            &format!("Permutation importance per statistic, {}", imp.classifier),
            "test accuracy drop when permuted (percentage points)",
            &imp.permutation,
            100.0,
        )?;
        page.figure("permutation_importances.svg", svg, "");
    }
    if !imp.impurity.is_empty() || !imp.permutation.is_empty() {
        let features: Vec<(String, String)> = unique(
            imp.impurity
                .iter()
                .chain(&imp.permutation)
                .map(|f| (f.feature.clone(), f.measure.clone())),
        );
        let mut rows = vec![vec![
            "statistic".to_string(),
            "measure".into(),
            "impurity importance".into(),
            "permutation: accuracy drop (points)".into(),
        ]];
        for (f, m) in features {
            let imp_cell = imp
                .impurity
                .iter()
                .find(|x| x.feature == f)
                .map(|x| format!("{:.4} ± {:.4}", x.mean, x.sem))
                .unwrap_or_else(|| "–".into());
            let perm_cell = imp
                .permutation
                .iter()
                .find(|x| x.feature == f)
                .map(|x| pm_values(x.mean, x.sem))
                .unwrap_or_else(|| "–".into());
            rows.push(vec![f, m, imp_cell, perm_cell]);
        }
        page.html
            .push_str("<details><summary>Importance values</summary>\n");
        page.html.push_str(&table(&rows, "nums"));
        page.html.push_str("</details>\n");
    }
    page.end_section();
    Ok(())
}

fn subsampling_figure(t: &TrajectoryResult, rules: usize) -> Fallible<String> {
    let keys: Vec<(String, usize)> = {
        let mut k = unique(t.subsampling.iter().map(|s| (s.measure.clone(), s.period)));
        k.sort_by(|a, b| {
            measure_rank(&a.0)
                .cmp(&measure_rank(&b.0))
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
        });
        k
    };
    let periods: Vec<usize> = {
        let mut p = unique(keys.iter().map(|k| k.1));
        p.sort_unstable();
        p
    };
    let x_max = t
        .subsampling
        .iter()
        .map(|s| s.proportion)
        .filter(|p| p.is_finite())
        .fold(1.0f64, f64::max);
    let title = format!(
        "Accuracy vs trajectory subsampling, {} (Fig. 4a)",
        t.classifier
    );
    render((1000, 540), |root| {
        let area = titled(root, &title, TITLE)?;
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(8)
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(4)
            .x_label_area_size(58)
            .y_label_area_size(62)
            .build_cartesian_2d(0.0..x_max * 1.02, 0.0..100.0)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", LABEL))
            .axis_desc_style(("sans-serif", DESC))
            .x_desc("subsample proportion (samples / trajectory points)")
            .y_desc("test accuracy (%)")
            .draw()?;
        let screen = plot.use_screen_coord();
        let px = |x: f64, y: f64| chart.backend_coord(&(x, y.clamp(0.0, 100.0)));
        let mut entries: Vec<(String, Swatch)> = Vec::new();
        for (m, p) in &keys {
            let mut pts: Vec<&SubsampleResult> = t
                .subsampling
                .iter()
                .filter(|s| {
                    s.measure == *m
                        && s.period == *p
                        && s.proportion.is_finite()
                        && s.accuracy.mean.is_finite()
                })
                .collect();
            pts.sort_by(|a, b| {
                a.proportion
                    .partial_cmp(&b.proportion)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let color = measure_color(m);
            let kind = periods.iter().position(|x| x == p).unwrap_or(0);
            let dash = PATTERNS[kind % PATTERNS.len()];
            let coords: Vec<(i32, i32)> = pts
                .iter()
                .map(|s| px(s.proportion, 100.0 * s.accuracy.mean))
                .collect();
            for w in coords.windows(2) {
                draw_segment(&screen, w[0], w[1], color, 2, dash)?;
            }
            for s in &pts {
                let sem = 100.0 * s.accuracy.sem;
                if sem.is_finite() && sem > 0.0 {
                    let lo = px(s.proportion, 100.0 * s.accuracy.mean - sem);
                    let hi = px(s.proportion, 100.0 * s.accuracy.mean + sem);
                    draw_segment(&screen, lo, hi, color, 1, SOLID)?;
                    draw_segment(&screen, (lo.0 - 3, lo.1), (lo.0 + 3, lo.1), color, 1, SOLID)?;
                    draw_segment(&screen, (hi.0 - 3, hi.1), (hi.0 + 3, hi.1), color, 1, SOLID)?;
                }
            }
            for c in &coords {
                draw_marker(&screen, *c, kind, color)?;
            }
            entries.push((
                format!("{m}, period {p}"),
                Swatch::Line {
                    color,
                    dash,
                    marker: Some(kind),
                },
            ));
        }
        if let Some(l) = chance_line(rules) {
            draw_segment(
                &screen,
                px(0.0, l.y),
                px(x_max * 1.02, l.y),
                l.color,
                2,
                DASHED,
            )?;
            entries.push((
                l.label,
                Swatch::Line {
                    color: l.color,
                    dash: DASHED,
                    marker: None,
                },
            ));
        }
        draw_legend(&legend, &entries, 16)?;
        Ok(())
    })
}

fn trajectory_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "trajectory",
        "How much of the trajectory is needed (Fig. 4, S2b)",
        "Each example is a trajectory of statistics over training. Subsampling (the paper's \
         Fig. 4a): only <i>count</i> samples, <i>period</i> points apart from a random start, are kept; \
         accuracy is plotted against the kept proportion of the trajectory. Thirds (Fig. 4b): \
         train on the early, middle or late third of the trajectory and test on a third. \
         Time-averaged (Fig. S2b): each statistic's trajectory replaced by its mean over time, \
         compared with the full trajectory.",
    );
    let Some(t) = &r.trajectory else {
        page.not_run(
            "The trajectory experiments (subsampling, thirds, time-averaged) were not run.",
        );
        page.end_section();
        return Ok(());
    };
    let rules = r.corpus.rules.len();
    let _ = writeln!(
        page.html,
        "<p>Classifier: <b>{}</b>.</p>",
        esc(&t.classifier)
    );

    page.html.push_str("<h3>Subsampling (Fig. 4a)</h3>\n");
    if t.subsampling.is_empty() {
        page.not_run("Trajectory subsampling was not run.");
    } else {
        let svg = subsampling_figure(t, rules)?;
        page.figure("subsampling.svg", svg, "");
        let mut rows = vec![vec![
            "measure".to_string(),
            "period".into(),
            "count".into(),
            "proportion".into(),
            "accuracy (%)".into(),
        ]];
        let mut items: Vec<&SubsampleResult> = t.subsampling.iter().collect();
        items.sort_by(|a, b| {
            measure_rank(&a.measure)
                .cmp(&measure_rank(&b.measure))
                .then(a.period.cmp(&b.period))
                .then(a.count.cmp(&b.count))
        });
        for s in items {
            rows.push(vec![
                s.measure.clone(),
                s.period.to_string(),
                s.count.to_string(),
                format!("{:.3}", s.proportion),
                pm(&s.accuracy),
            ]);
        }
        page.html
            .push_str("<details><summary>Subsampling values</summary>\n");
        page.html.push_str(&table(&rows, "nums"));
        page.html.push_str("</details>\n");
    }

    page.html
        .push_str("<h3>Train on one third, test on a third (Fig. 4b)</h3>\n");
    let thirds_ok = !t.thirds.is_empty() && t.thirds.iter().any(|row| !row.is_empty());
    if !thirds_ok {
        page.not_run("The thirds experiment was not run.");
    } else {
        let names = |n: usize| -> Vec<String> {
            if n == 3 {
                vec!["early".into(), "middle".into(), "late".into()]
            } else {
                (0..n).map(|i| format!("part {}", i + 1)).collect()
            }
        };
        let nr = t.thirds.len();
        let nc = t.thirds.iter().map(Vec::len).max().unwrap_or(0);
        let heat = Heat {
            title: format!("Train third × test third, {} (Fig. 4b)", t.classifier),
            title_size: PANEL_TITLE,
            rows: names(nr),
            cols: names(nc),
            values: t
                .thirds
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|a| a.mean.is_finite().then_some(a.mean))
                        .collect()
                })
                .collect(),
            text: t
                .thirds
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|a| {
                            if a.mean.is_finite() {
                                vec![pct(a.mean), format!("± {}", pct(a.sem))]
                            } else {
                                vec!["–".into()]
                            }
                        })
                        .collect()
                })
                .collect(),
            x_desc: "test on third".into(),
            y_desc: "train on third".into(),
            scale: "test accuracy (%)".into(),
        };
        let svg = render((560, 500), |a| draw_heat(a, &heat))?;
        page.figure("thirds.svg", svg, "half");
        let cols = names(nc);
        let mut rows = vec![
            std::iter::once("train \\ test".to_string())
                .chain(cols.iter().map(|c| format!("{c} (%)")))
                .collect::<Vec<_>>(),
        ];
        for (i, row) in t.thirds.iter().enumerate() {
            rows.push(
                std::iter::once(names(nr)[i].clone())
                    .chain(row.iter().map(pm))
                    .collect(),
            );
        }
        page.html.push_str(&table(&rows, "nums rowhead"));
    }

    page.html
        .push_str("<h3>Time-averaged trajectories (Fig. S2b)</h3>\n");
    if t.time_averaged.is_empty() {
        page.not_run("The time-averaged control was not run.");
    } else {
        let mut items: Vec<&MeasureAccuracy> = t.time_averaged.iter().collect();
        items.sort_by_key(|m| measure_rank(&m.measure));
        let measures: Vec<String> = items.iter().map(|m| m.measure.clone()).collect();
        let full: Vec<Option<&MainResult>> = measures
            .iter()
            .map(|m| find_main(r, &t.classifier, m))
            .collect();
        let mut series = Vec::new();
        if full.iter().any(Option::is_some) {
            series.push(Series {
                label: "full trajectory".into(),
                color: PALETTE[0],
                values: full
                    .iter()
                    .map(|f| f.and_then(|f| acc_val(&f.accuracy)))
                    .collect(),
            });
        }
        series.push(Series {
            label: "time-averaged".into(),
            color: PALETTE[1],
            values: items.iter().map(|m| acc_val(&m.accuracy)).collect(),
        });
        let bars = Bars {
            title: format!(
                "Full vs time-averaged trajectories, {} (Fig. S2b)",
                t.classifier
            ),
            title_size: TITLE,
            groups: measures.clone(),
            series,
            lines: chance_line(rules).into_iter().collect(),
            x_desc: "measure".into(),
            y_desc: "test accuracy (%)".into(),
            shade_last: false,
        };
        let svg = render((1000, 500), |a| draw_bars(a, &bars))?;
        page.figure("time_averaged.svg", svg, "");
        let mut rows = vec![vec![
            "measure".to_string(),
            "full trajectory (%)".into(),
            "time-averaged (%)".into(),
        ]];
        for (m, f) in items.iter().zip(&full) {
            rows.push(vec![
                m.measure.clone(),
                f.map(|f| pm(&f.accuracy)).unwrap_or_else(|| "–".into()),
                pm(&m.accuracy),
            ]);
        }
        page.html.push_str(&table(&rows, "nums"));
    }
    page.end_section();
    Ok(())
}

fn model_label(n: &NoiseResult) -> String {
    let mut parts = Vec::new();
    if let Some(f) = n.unit_fraction {
        parts.push(format!("f = {}", num(f)));
    }
    if let Some(s) = n.noise_std {
        parts.push(format!("σ = {}", num(s)));
    }
    if parts.is_empty() {
        n.model.clone()
    } else {
        format!("{} ({})", n.model, parts.join(", "))
    }
}

/// The noise results as an (f × σ) grid when they form one: one classifier, every model's
/// fraction and std known, distinct pairs, ≥ 2 values of each, at least half the cells filled.
fn noise_grid(noise: &[NoiseResult]) -> Option<(Vec<f64>, Vec<f64>)> {
    let classifiers: BTreeSet<&str> = noise.iter().map(|n| n.classifier.as_str()).collect();
    if classifiers.len() != 1 {
        return None;
    }
    let mut pairs = Vec::new();
    for n in noise {
        let (f, s) = (n.unit_fraction?, n.noise_std?);
        if !f.is_finite() || !s.is_finite() || pairs.contains(&(f, s)) {
            return None;
        }
        pairs.push((f, s));
    }
    let mut fs: Vec<f64> = unique(pairs.iter().map(|p| p.0));
    let mut ss: Vec<f64> = unique(pairs.iter().map(|p| p.1));
    fs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    ss.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let filled = 2 * pairs.len() >= fs.len() * ss.len();
    (pairs.len() >= 4 && fs.len() >= 2 && ss.len() >= 2 && filled).then_some((fs, ss))
}

fn noise_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "noise",
        "Unit undersampling and measurement noise (Fig. 5)",
        "How robust is the identification to realistic measurement? The corpus is re-measured \
         under several measurement models — a fraction f of the units observed, with Gaussian \
         noise of standard deviation σ added — and the classifier is trained and tested per \
         model and measure (mean ± s.e.m. over the splits). Chance is 1 / number of rules \
         compared (FA vs IA in the paper: 50 %). This is the paper's Fig. 5.",
    );
    let noise: Vec<&NoiseResult> = r
        .noise
        .iter()
        .filter(|n| !n.per_measure.is_empty())
        .collect();
    if noise.is_empty() {
        page.not_run("The measurement-noise experiment was not run.");
        page.end_section();
        return Ok(());
    }
    let measures: Vec<String> = {
        let mut m = unique(
            noise
                .iter()
                .flat_map(|n| n.per_measure.iter().map(|x| x.measure.clone())),
        );
        m.sort_by(|a, b| measure_rank(a).cmp(&measure_rank(b)).then(a.cmp(b)));
        m
    };
    fn acc_of<'n>(n: &'n NoiseResult, m: &str) -> Option<&'n Accuracy> {
        n.per_measure
            .iter()
            .find(|x| x.measure == m)
            .map(|x| &x.accuracy)
    }
    let rule_sets: Vec<Vec<String>> = unique(noise.iter().map(|n| n.rules.clone()));
    let rules_n = rule_sets
        .first()
        .map(Vec::len)
        .unwrap_or(r.corpus.rules.len());
    let owned: Vec<NoiseResult> = noise.iter().map(|n| (*n).clone()).collect();
    let classifiers: Vec<String> = unique(noise.iter().map(|n| n.classifier.clone()));

    if let Some((fs, ss)) = noise_grid(&owned) {
        // One heat map per measure: rows σ, columns f.
        let panels: Vec<Heat> = measures
            .iter()
            .map(|m| {
                let cell = |f: f64, s: f64| {
                    owned
                        .iter()
                        .find(|n| n.unit_fraction == Some(f) && n.noise_std == Some(s))
                        .and_then(|n| acc_of(n, m))
                        .filter(|a| a.mean.is_finite())
                };
                Heat {
                    title: m.to_string(),
                    title_size: PANEL_TITLE,
                    rows: ss.iter().map(|s| format!("σ = {}", num(*s))).collect(),
                    cols: fs.iter().map(|f| num(*f)).collect(),
                    values: ss
                        .iter()
                        .map(|s| fs.iter().map(|f| cell(*f, *s).map(|a| a.mean)).collect())
                        .collect(),
                    text: ss
                        .iter()
                        .map(|s| {
                            fs.iter()
                                .map(|f| match cell(*f, *s) {
                                    Some(a) => vec![pct(a.mean), format!("± {}", pct(a.sem))],
                                    None => vec!["–".into()],
                                })
                                .collect()
                        })
                        .collect(),
                    x_desc: "unit fraction f".into(),
                    y_desc: "noise σ".into(),
                    scale: "test accuracy (%)".into(),
                }
            })
            .collect();
        let cols = if panels.len() > 1 { 2 } else { 1 };
        let rows = panels.len().div_ceil(cols);
        let pw = (260 + 90 * fs.len() as u32).clamp(520, 800);
        let ph = (220 + 60 * ss.len() as u32).clamp(420, 700);
        let title = format!(
            "Accuracy per unit fraction × noise, {} ({} rules, chance {:.0} %) (Fig. 5)",
            classifiers[0],
            rules_n,
            100.0 * chance(rules_n)
        );
        let svg = render((pw * cols as u32, 70 + ph * rows as u32), |a| {
            let body = titled(a, &title, TITLE)?;
            let areas = body.split_evenly((rows, cols));
            for (area, heat) in areas.iter().zip(&panels) {
                draw_heat(area, heat)?;
            }
            Ok(())
        })?;
        page.figure("noise.svg", svg, "");
    } else {
        let series: Vec<Series> = noise
            .iter()
            .enumerate()
            .map(|(i, n)| Series {
                label: if classifiers.len() > 1 {
                    format!("{}: {}", n.classifier, model_label(n))
                } else {
                    model_label(n)
                },
                color: series_color(i),
                values: measures
                    .iter()
                    .map(|m| acc_of(n, m).and_then(acc_val))
                    .collect(),
            })
            .collect();
        let title = if noise.len() == 1 {
            format!(
                "Accuracy under measurement model {}, {} (Fig. 5)",
                model_label(noise[0]),
                noise[0].classifier
            )
        } else if classifiers.len() == 1 {
            format!(
                "Accuracy per measurement model, {} (Fig. 5)",
                classifiers[0]
            )
        } else {
            "Accuracy per measurement model (Fig. 5)".to_string()
        };
        let bars = Bars {
            title,
            title_size: TITLE,
            groups: measures.clone(),
            series,
            lines: chance_line(rules_n).into_iter().collect(),
            x_desc: "measure".into(),
            y_desc: "test accuracy (%)".into(),
            shade_last: false,
        };
        let svg = render((1000, 520), |a| draw_bars(a, &bars))?;
        page.figure("noise.svg", svg, "");
    }
    if rule_sets.len() > 1 {
        page.html.push_str("<p>Note: the models compare different rule sets; the chance line is for the first.</p>\n");
    }
    let mut rows = vec![
        ["classifier", "model", "unit fraction f", "noise σ", "rules"]
            .iter()
            .map(|s| s.to_string())
            .chain(measures.iter().map(|m| format!("{m} (%)")))
            .collect::<Vec<_>>(),
    ];
    for n in &noise {
        let mut row = vec![
            n.classifier.clone(),
            n.model.clone(),
            n.unit_fraction.map(num).unwrap_or_else(|| "?".into()),
            n.noise_std.map(num).unwrap_or_else(|| "?".into()),
            n.rules.join(", "),
        ];
        row.extend(
            measures
                .iter()
                .map(|m| acc_of(n, m).map(pm).unwrap_or_else(|| "–".into())),
        );
        rows.push(row);
    }
    page.html.push_str(&table(&rows, "nums"));
    page.end_section();
    Ok(())
}

fn early_section(page: &mut Page, r: &AnalysisResults) -> Fallible {
    page.section(
        "early",
        "Early identification (live)",
        "How soon is a run identified? One classifier per prefix length k sees only the first k \
         points of each layer's trajectory; a run's prediction is the mean of its layers' \
         probabilities. Runs are held out of training — every run of one seed combination (model \
         seed × data seed) in turn, and every run of one architecture in turn — and the curve \
         is the fraction of held-out runs whose prediction is right after k points. This is what \
         the daemon's live identification does while a job trains (lrid identify).",
    );
    let Some(e) = r.early.as_ref().filter(|e| !e.curves.is_empty()) else {
        page.not_run(
            "The early-identification experiment was not run (or the corpus has one value of each held-out factor).",
        );
        page.end_section();
        return Ok(());
    };
    let svg = early_figure(e, r.corpus.rules.len())?;
    page.figure("early.svg", svg, "");
    let points = e.curves.iter().map(|c| c.accuracy.len()).max().unwrap_or(0);
    let mut header = vec!["held out".to_string(), "groups".into(), "runs".into()];
    let shown: Vec<usize> = [1, 2, 5, 10, 15, points]
        .into_iter()
        .filter(|&k| k >= 1 && k <= points)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    header.extend(shown.iter().map(|k| format!("k = {k} (%)")));
    let mut rows = vec![header];
    for c in &e.curves {
        let mut row = vec![c.held_out.clone(), c.groups.join(", "), c.runs.to_string()];
        row.extend(shown.iter().map(|&k| pct(c.accuracy[k - 1])));
        rows.push(row);
    }
    let _ = writeln!(
        page.html,
        "<p>Classifier: <b>{}</b>.</p>",
        esc(&e.classifier)
    );
    page.html.push_str(&table(&rows, "nums"));
    page.end_section();
    Ok(())
}

fn early_figure(e: &EarlyResult, rules: usize) -> Fallible<String> {
    let points = e.curves.iter().map(|c| c.accuracy.len()).max().unwrap_or(1);
    let title = format!("Held-out runs identified after k points, {}", e.classifier);
    render((1000, 540), |root| {
        let area = titled(root, &title, TITLE)?;
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w - LEGEND_W);
        let x_max = points as f64 + 0.5;
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(8)
            .margin_left(8)
            .margin_right(20)
            .margin_bottom(4)
            .x_label_area_size(58)
            .y_label_area_size(62)
            .build_cartesian_2d(0.5..x_max, 0.0..100.0)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(points.min(21))
            .y_labels(11)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", LABEL))
            .axis_desc_style(("sans-serif", DESC))
            .x_desc("trajectory points seen (k)")
            .y_desc("held-out runs identified (%)")
            .draw()?;
        let screen = plot.use_screen_coord();
        let px = |x: f64, y: f64| chart.backend_coord(&(x, y.clamp(0.0, 100.0)));
        let mut entries: Vec<(String, Swatch)> = Vec::new();
        for (i, c) in e.curves.iter().enumerate() {
            let color = series_color(i);
            let dash = PATTERNS[i % PATTERNS.len()];
            let coords: Vec<(i32, i32)> = c
                .accuracy
                .iter()
                .enumerate()
                .filter(|(_, a)| a.is_finite())
                .map(|(k, a)| px(k as f64 + 1.0, 100.0 * a))
                .collect();
            for w in coords.windows(2) {
                draw_segment(&screen, w[0], w[1], color, 2, dash)?;
            }
            for p in &coords {
                draw_marker(&screen, *p, i, color)?;
            }
            entries.push((
                format!("held out: {} ({} runs)", c.held_out, c.runs),
                Swatch::Line {
                    color,
                    dash,
                    marker: Some(i),
                },
            ));
        }
        if let Some(l) = chance_line(rules) {
            draw_segment(&screen, px(0.5, l.y), px(x_max, l.y), l.color, 2, DASHED)?;
            entries.push((
                l.label,
                Swatch::Line {
                    color: l.color,
                    dash: DASHED,
                    marker: None,
                },
            ));
        }
        draw_legend(&legend, &entries, 16)?;
        Ok(())
    })
}

fn failures_section(page: &mut Page, r: &AnalysisResults) {
    page.section(
        "failures",
        "Failures",
        "Fits that failed (a classifier that panicked or refused its configuration, …). The other \
         results are complete without them.",
    );
    if r.failures.is_empty() {
        page.html.push_str("<p>No fit failed.</p>\n");
    } else {
        let mut rows = vec![vec![
            "experiment".to_string(),
            "classifier".into(),
            "measure".into(),
            "reason".into(),
        ]];
        rows.extend(r.failures.iter().map(|f| {
            vec![
                f.experiment.clone(),
                f.classifier.clone(),
                f.measure.clone().unwrap_or_else(|| "–".into()),
                f.reason.clone(),
            ]
        }));
        page.html.push_str(&table(&rows, "failures"));
    }
    page.end_section();
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: [&str; 4] = [
        "adam",
        "feedback-alignment",
        "information-alignment",
        "sgdm",
    ];
    const CLASSIFIERS: [&str; 2] = ["random-forest", "linear-svm"];
    const STATS: [(&str, &str); 27] = [
        ("weightabs_mean", "weight"),
        ("weightabs_median", "weight"),
        ("weightabs_norm", "weight"),
        ("weightabs_thirdquartile", "weight"),
        ("weightabs_var", "weight"),
        ("weightraw_mean", "weight"),
        ("weightraw_median", "weight"),
        ("weightraw_norm", "weight"),
        ("weightraw_thirdquartile", "weight"),
        ("weightraw_var", "weight"),
        ("weightsq_mean", "weight"),
        ("weightsq_median", "weight"),
        ("weightsq_thirdquartile", "weight"),
        ("actabs_mean", "act"),
        ("actabs_median", "act"),
        ("actabs_norm", "act"),
        ("actabs_thirdquartile", "act"),
        ("actraw_mean", "act"),
        ("actraw_median", "act"),
        ("actraw_norm", "act"),
        ("actraw_thirdquartile", "act"),
        ("gradavgabs_id", "grad"),
        ("gradavgraw_id", "grad"),
        ("gradavgsq_id", "grad"),
        ("grp_id0", "position"),
        ("grp_id1", "position"),
        ("grp_id2", "position"),
    ];

    /// A small deterministic generator of numbers in [0, 1).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn acc(rng: &mut Lcg, centre: f64) -> Accuracy {
        let values: Vec<f64> = (0..3)
            .map(|_| (centre + 0.06 * (rng.next() - 0.5)).clamp(0.0, 1.0))
            .collect();
        let mean = values.iter().sum::<f64>() / 3.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0;
        Accuracy {
            mean,
            sem: (var / 3.0).sqrt(),
            values,
        }
    }

    fn confusion(rng: &mut Lcg, acc: f64) -> Vec<Vec<u64>> {
        (0..4)
            .map(|i| {
                (0..4)
                    .map(|j| {
                        if i == j {
                            (300.0 * acc) as u64
                        } else {
                            (300.0 * (1.0 - acc) / 3.0 * (0.5 + rng.next())) as u64
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn fixture() -> AnalysisResults {
        let mut rng = Lcg(7);
        let rules: Vec<String> = RULES.iter().map(|r| r.to_string()).collect();
        let mut main = Vec::new();
        for (ci, c) in CLASSIFIERS.iter().enumerate() {
            for (mi, m) in MEASURES.iter().enumerate() {
                let centre = 0.9 - 0.15 * ci as f64 - 0.04 * mi as f64;
                let accuracy = acc(&mut rng, centre);
                let splits = (0..3)
                    .map(|s| SplitResult {
                        split: s,
                        train_examples: 900,
                        test_examples: 300,
                        accuracy: accuracy.values[s],
                        config: serde_json::json!({"n_estimators": 100, "max_features": "sqrt"}),
                        cv: vec![CvScore {
                            config: serde_json::json!({"n_estimators": 100}),
                            accuracy: 0.8,
                        }],
                        confusion: confusion(&mut rng, accuracy.values[s]),
                        fit_seconds: 1.5,
                    })
                    .collect::<Vec<_>>();
                let mut total = vec![vec![0u64; 4]; 4];
                for s in &splits {
                    for (row, split_row) in total.iter_mut().zip(&s.confusion) {
                        for (cell, c) in row.iter_mut().zip(split_row) {
                            *cell += c;
                        }
                    }
                }
                let mut pairwise = Vec::new();
                for a in 0..4 {
                    for b in a + 1..4 {
                        pairwise.push(PairResult {
                            a: rules[a].clone(),
                            b: rules[b].clone(),
                            accuracy: acc(&mut rng, 0.95 - 0.05 * ci as f64 - 0.02 * mi as f64),
                        });
                    }
                }
                main.push(MainResult {
                    classifier: c.to_string(),
                    measure: m.to_string(),
                    accuracy,
                    confusion: total,
                    splits,
                    pairwise,
                });
            }
        }
        // A fixed, recognisable number: random-forest on all measures.
        main[3].accuracy = Accuracy {
            mean: 0.8734,
            sem: 0.0123,
            values: vec![0.86, 0.8734, 0.8868],
        };
        let reference = Some(main[3].accuracy.mean);
        let held = |factor: &str, values: &[&str], rng: &mut Lcg| {
            let vals: Vec<HeldOutValue> = values
                .iter()
                .map(|v| HeldOutValue {
                    value: v.to_string(),
                    train_examples: 1000,
                    test_examples: 100,
                    accuracy: 0.6 + 0.3 * rng.next(),
                    confusion: vec![vec![25; 4]; 4],
                })
                .collect();
            let n = vals.len() as f64;
            let mean = vals.iter().map(|v| v.accuracy).sum::<f64>() / n;
            HeldOutResult {
                classifier: "random-forest".into(),
                factor: factor.into(),
                accuracy: Accuracy {
                    mean,
                    sem: 0.03,
                    values: vals.iter().map(|v| v.accuracy).collect(),
                },
                values: vals,
                reference,
            }
        };
        let held_out = vec![
            held(
                "architecture",
                &[
                    "alexnet",
                    "alexnet_lrn",
                    "knet4",
                    "knet4_lrn",
                    "knet5",
                    "knet5_lrn",
                    "resnet18_v1",
                    "resnet18_v2",
                    "resnet34_v1",
                    "resnet34_v2",
                ],
                &mut rng,
            ),
            held(
                "curriculum",
                &[
                    "bs128_seed0",
                    "bs128_seed1",
                    "bs256_seed0",
                    "bs256_seed1",
                    "bs512_seed0",
                    "bs512_seed1",
                ],
                &mut rng,
            ),
            held("task", &["cifar10", "imagenet", "simclr", "wsn"], &mut rng),
        ];
        let importances = ImportanceResult {
            classifier: "random-forest".into(),
            impurity: STATS
                .iter()
                .map(|(f, m)| FeatureImportance {
                    feature: f.to_string(),
                    measure: m.to_string(),
                    mean: if *m == "position" {
                        0.002
                    } else {
                        0.02 + 0.06 * rng.next()
                    },
                    sem: 0.004,
                })
                .collect(),
            permutation: STATS
                .iter()
                .map(|(f, m)| FeatureImportance {
                    feature: f.to_string(),
                    measure: m.to_string(),
                    mean: 0.05 * rng.next() - 0.005,
                    sem: 0.003,
                })
                .collect(),
        };
        let mut subsampling = Vec::new();
        for m in MEASURES {
            for period in [1usize, 3, 5] {
                for count in 1..=(20 / period + 1).min(7) {
                    subsampling.push(SubsampleResult {
                        measure: m.into(),
                        period,
                        count,
                        proportion: count as f64 / 21.0,
                        accuracy: acc(&mut rng, 0.4 + 0.07 * count as f64 + 0.02 * period as f64),
                    });
                }
            }
        }
        let trajectory = TrajectoryResult {
            classifier: "random-forest".into(),
            subsampling,
            thirds: (0..3)
                .map(|i| {
                    (0..3)
                        .map(|j| acc(&mut rng, if i == j { 0.8 } else { 0.45 }))
                        .collect()
                })
                .collect(),
            time_averaged: MEASURES
                .iter()
                .map(|m| MeasureAccuracy {
                    measure: m.to_string(),
                    accuracy: acc(&mut rng, 0.6),
                })
                .collect(),
        };
        let noise = [("exact", 1.0, 0.0), ("electrode", 2.1e-4, 0.1)]
            .iter()
            .map(|(model, f, s)| NoiseResult {
                classifier: "random-forest".into(),
                model: model.to_string(),
                unit_fraction: Some(*f),
                noise_std: Some(*s),
                rules: vec!["feedback-alignment".into(), "information-alignment".into()],
                per_measure: MEASURES
                    .iter()
                    .map(|m| MeasureAccuracy {
                        measure: m.to_string(),
                        accuracy: acc(&mut rng, if *model == "exact" { 0.9 } else { 0.62 }),
                    })
                    .collect(),
            })
            .collect();
        AnalysisResults {
            format: RESULTS_FORMAT,
            name: "fixture-analysis".into(),
            created_at: "2026-03-14T09:26:53Z".into(),
            settings: Settings {
                server: "http://127.0.0.1:50051".into(),
                where_predicate: Some("task <> 'simclr'".into()),
                model: "exact".into(),
                points: 21,
                grid: "fast".into(),
                classifiers: CLASSIFIERS.iter().map(|c| c.to_string()).collect(),
                experiments: vec![
                    "main".into(),
                    "held_out".into(),
                    "importances".into(),
                    "trajectory".into(),
                    "noise".into(),
                ],
                splits: 3,
                test_fraction: 0.25,
                folds: 5,
                seed: 0,
                zscore: true,
            },
            corpus: CorpusSummary {
                examples: 4800,
                runs: 96,
                rules: rules.clone(),
                examples_per_rule: rules.iter().map(|r| (r.clone(), 1200)).collect(),
                runs_per_architecture: [("alexnet", 48), ("resnet18_v2", 48)]
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                runs_per_task: [("cifar10", 48), ("imagenet", 48)]
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                models: vec!["exact".into(), "electrode".into()],
                features: 507,
                excluded: vec![Excluded {
                    run_id: "run-0042".into(),
                    reason: "only 3 points < 21 required & \"non-finite\"".into(),
                }],
            },
            main,
            held_out,
            importances: Some(importances),
            trajectory: Some(trajectory),
            noise,
            early: Some(EarlyResult {
                classifier: "random-forest".into(),
                curves: vec![
                    EarlyCurve {
                        held_out: "seeds".into(),
                        groups: vec!["m0/d0".into(), "m0/d1".into()],
                        runs: 24,
                        accuracy: (1..=21).map(|k| 0.25 + 0.7 * k as f64 / 21.0).collect(),
                    },
                    EarlyCurve {
                        held_out: "architecture".into(),
                        groups: vec!["alexnet".into(), "resnet18_v2".into()],
                        runs: 96,
                        accuracy: (1..=21).map(|k| 0.25 + 0.3 * k as f64 / 21.0).collect(),
                    },
                ],
            }),
            failures: vec![Failure {
                experiment: "main".into(),
                classifier: "linear-svm".into(),
                measure: Some("grad".into()),
                reason: "panicked: PCA components <n> exceed features".into(),
            }],
            seconds: 754.2,
            experiment_seconds: [("main".to_string(), 600.0), ("noise".to_string(), 154.2)]
                .into_iter()
                .collect(),
        }
    }

    const FIGURES: [(&str, &[&str]); 14] = [
        (
            "main_accuracy.svg",
            &["Test accuracy per measure", "test accuracy (%)", "measure"],
        ),
        (
            "confusion_random-forest_all.svg",
            &[
                "Confusion, random-forest on all",
                "predicted rule",
                "true rule",
            ],
        ),
        (
            "confusion_linear-svm_all.svg",
            &[
                "Confusion, linear-svm on all",
                "predicted rule",
                "true rule",
            ],
        ),
        (
            "confusion_random-forest_weight.svg",
            &["Confusion, random-forest on weight"],
        ),
        (
            "pairwise_random-forest.svg",
            &[
                "Two-rule test accuracy, random-forest",
                "rule pair",
                "test accuracy (%)",
            ],
        ),
        (
            "pairwise_linear-svm.svg",
            &["Two-rule test accuracy, linear-svm", "rule pair"],
        ),
        (
            "held_out.svg",
            &[
                "Generalisation to held-out values",
                "held-out architecture",
                "held-out task",
                "test accuracy (%)",
            ],
        ),
        (
            "importances.svg",
            &[
                "Impurity importance per statistic",
                "impurity importance",
                "weightabs_median",
            ],
        ),
        (
            "permutation_importances.svg",
            &["Permutation importance per statistic", "accuracy drop"],
        ),
        (
            "subsampling.svg",
            &[
                "Accuracy vs trajectory subsampling",
                "subsample proportion",
                "test accuracy (%)",
            ],
        ),
        (
            "thirds.svg",
            &[
                "Train third × test third",
                "test on third",
                "train on third",
            ],
        ),
        (
            "time_averaged.svg",
            &[
                "Full vs time-averaged trajectories",
                "measure",
                "test accuracy (%)",
            ],
        ),
        (
            "noise.svg",
            &[
                "Accuracy per measurement model",
                "measure",
                "test accuracy (%)",
            ],
        ),
        (
            "early.svg",
            &[
                "Held-out runs identified after k points",
                "trajectory points seen (k)",
                "held-out runs identified (%)",
                "seeds",
                "chance (25.0",
            ],
        ),
    ];

    #[test]
    fn full_report_has_every_figure_and_the_numbers() {
        let results = fixture();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let written = write_report(&results, &out).unwrap();
        let html = fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        for (file, needles) in FIGURES {
            let path = out.join(file);
            assert!(
                written.contains(&path),
                "{file} not among the written paths"
            );
            let svg = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(svg.starts_with("<svg"), "{file} does not start with <svg");
            assert!(svg.trim_end().ends_with("</svg>"), "{file} is not closed");
            assert_eq!(
                svg.matches("<text").count(),
                svg.matches("</text>").count(),
                "{file}"
            );
            for n in needles {
                let escaped = esc(n);
                assert!(svg.contains(&escaped), "{file} lacks {n:?}");
            }
            assert!(html.contains(&svg), "{file} is not inline in index.html");
            assert!(
                html.contains(&format!("href=\"{file}\"")),
                "{file} not linked"
            );
        }
        let svgs = written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
            .count();
        // 8 confusions + 2 pairwise + the other 9.
        assert_eq!(svgs, 8 + 2 + 9);
        assert!(written.contains(&out.join("results.json")));
        assert!(written.contains(&out.join("index.html")));
        // Chance lines.
        let main_svg = fs::read_to_string(out.join("main_accuracy.svg")).unwrap();
        assert!(main_svg.contains("chance (25.0"));
        let noise_svg = fs::read_to_string(out.join("noise.svg")).unwrap();
        assert!(noise_svg.contains("chance (50.0"));
        assert!(noise_svg.contains("f = 2.1e-4") && noise_svg.contains("σ = 0.1"));
        // Numbers.
        assert!(html.contains("87.3 ± 1.2"), "main accuracy as a percentage");
        assert!(html.contains("fixture-analysis"));
        assert!(html.contains("2026-03-14"));
        assert!(html.contains("task &lt;&gt; &#39;simclr&#39;"));
        // Escaping of strings from the results.
        assert!(html.contains("only 3 points &lt; 21 required &amp; &quot;non-finite&quot;"));
        assert!(!html.contains("3 points < 21"));
        assert!(html.contains("PCA components &lt;n&gt; exceed features"));
        assert!(html.contains("run-0042"));
        assert!(!html.contains("was not run"), "every experiment ran");
        for rule in RULES {
            assert!(html.contains(rule));
        }
    }

    #[test]
    fn absent_parts_are_left_out_with_a_sentence() {
        let mut results = fixture();
        results.trajectory = None;
        results.held_out.clear();
        results.noise.clear();
        results.importances = None;
        results.early = None;
        let dir = tempfile::tempdir().unwrap();
        let written = write_report(&results, dir.path()).unwrap();
        let html = fs::read_to_string(dir.path().join("index.html")).unwrap();
        for gone in [
            "early.svg",
            "held_out.svg",
            "noise.svg",
            "subsampling.svg",
            "thirds.svg",
            "time_averaged.svg",
            "importances.svg",
            "permutation_importances.svg",
        ] {
            assert!(!dir.path().join(gone).exists(), "{gone} written");
            assert!(!written.contains(&dir.path().join(gone)));
            assert!(
                !html.contains(&format!("href=\"{gone}\"")),
                "{gone} in the page"
            );
        }
        assert!(html.contains(
            "The trajectory experiments (subsampling, thirds, time-averaged) were not run."
        ));
        assert!(html.contains("The held-out generalisation experiment was not run."));
        assert!(html.contains("The measurement-noise experiment was not run."));
        assert!(html.contains("The importance experiment was not run."));
        assert!(html.contains("The early-identification experiment was not run"));
        assert!(dir.path().join("main_accuracy.svg").exists());
    }

    #[test]
    fn empty_results_draw_no_plot() {
        let mut results = fixture();
        results.main.clear();
        results.trajectory = None;
        results.held_out.clear();
        results.noise.clear();
        results.importances = None;
        results.early = None;
        results.failures.clear();
        let dir = tempfile::tempdir().unwrap();
        let written = write_report(&results, dir.path()).unwrap();
        assert_eq!(
            written.len(),
            2,
            "only results.json and index.html: {written:?}"
        );
        let html = fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(!html.contains("<svg"));
        assert!(html.contains("The main classification experiment was not run"));
        assert!(html.contains("The pairwise (two-rule) experiment was not run."));
        assert!(html.contains("No fit failed."));
        let table = summary_table(&results);
        assert!(table.contains("no main results"));
    }

    /// The fixture with a 3 × 2 grid of measurement models (f × σ), one cell missing.
    fn grid_fixture() -> AnalysisResults {
        let mut results = fixture();
        let template = results.noise[0].clone();
        let mut rng = Lcg(11);
        results.noise = [
            (1.0, 0.0),
            (1.0, 0.5),
            (0.01, 0.0),
            (0.01, 0.5),
            (2.1e-4, 0.0),
        ]
        .iter()
        .enumerate()
        .map(|(i, (f, s))| NoiseResult {
            model: format!("m{i}"),
            unit_fraction: Some(*f),
            noise_std: Some(*s),
            per_measure: template
                .per_measure
                .iter()
                .map(|m| MeasureAccuracy {
                    measure: m.measure.clone(),
                    accuracy: acc(&mut rng, 0.5 + 0.4 * f.powf(0.2) * (1.0 - s)),
                })
                .collect(),
            ..template.clone()
        })
        .collect();
        results
    }

    #[test]
    fn noise_grid_is_drawn_as_heat_maps() {
        let results = grid_fixture();
        let dir = tempfile::tempdir().unwrap();
        write_report(&results, dir.path()).unwrap();
        let svg = fs::read_to_string(dir.path().join("noise.svg")).unwrap();
        assert!(svg.contains("Accuracy per unit fraction × noise"));
        assert!(svg.contains("unit fraction f"));
        assert!(svg.contains("σ = 0.5"));
    }

    #[test]
    fn summary_table_lists_classifiers_accuracies_and_failures() {
        let results = fixture();
        let table = summary_table(&results);
        for c in CLASSIFIERS {
            assert!(table.contains(c), "{table}");
        }
        for m in MEASURES {
            assert!(table.lines().nth(1).unwrap().contains(m), "{table}");
        }
        assert!(table.contains("87.3 ± 1.2"), "{table}");
        for r in &results.main {
            assert!(table.contains(&pm(&r.accuracy)), "{table}");
        }
        assert!(table.contains("chance 25.0 %"));
        assert!(table.contains(
            "failed: main / linear-svm / grad: panicked: PCA components <n> exceed features"
        ));
        // Columns line up: every row is as wide as the header (numbers right-aligned).
        let lines: Vec<&str> = table.lines().skip(1).take(3).collect();
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    #[test]
    fn names_from_results_are_escaped_in_svg_and_file_names() {
        let mut results = fixture();
        for m in &mut results.main {
            if m.classifier == "linear-svm" {
                m.classifier = "svm<\"a&b\">".into();
            }
        }
        results.corpus.rules[0] = "adam<β>".into();
        let dir = tempfile::tempdir().unwrap();
        let written = write_report(&results, dir.path()).unwrap();
        let confusion = dir.path().join("confusion_svm--a-b--_all.svg");
        assert!(written.contains(&confusion), "{written:?}");
        let svg = fs::read_to_string(&confusion).unwrap();
        assert!(svg.contains("svm&lt;&quot;a&amp;b&quot;&gt;"));
        assert!(svg.contains("adam&lt;β&gt;"));
        assert!(!svg.contains("svm<\""));
        let html = fs::read_to_string(dir.path().join("index.html")).unwrap();
        for bad in ["svm<\"", "adam<β"] {
            assert!(
                !html.contains(bad),
                "{bad}: {}",
                &html[html.find(bad).unwrap()..][..200]
            );
        }
        assert!(html.contains("<h3>svm&lt;&quot;a&amp;b&quot;&gt;</h3>"));
    }

    #[test]
    fn results_json_round_trips() {
        let results = fixture();
        let dir = tempfile::tempdir().unwrap();
        write_report(&results, dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join("results.json")).unwrap();
        assert!(text.contains("\n  \"format\": 1"), "pretty JSON");
        let back: AnalysisResults = serde_json::from_str(&text).unwrap();
        assert_eq!(back, results);
    }

    #[test]
    fn helpers() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(file_part("rf/x y"), "rf-x-y");
        assert_eq!(
            wrap("information-alignment", 12, 3),
            vec!["information-", "alignment"]
        );
        assert_eq!(wrap("adam", 12, 3), vec!["adam"]);
        assert_eq!(wrap("abcdefghijklmnop", 5, 2), vec!["abcde", "fghi…"]);
        assert_eq!(pm_values(0.5, 0.01), "50.0 ± 1.0");
        assert_eq!(pm_values(f64::NAN, 0.01), "–");
        assert_eq!(num(2.1e-4), "2.1e-4");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(duration(754.2), "12 min 34 s");
        let c = heat_color(0.0);
        assert_eq!((c.0, c.1, c.2), (247, 251, 255));
        let c = heat_color(1.0);
        assert_eq!((c.0, c.1, c.2), (8, 48, 107));
    }

    /// Writes the fixture report to `$LRID_REPORT_DEMO` (for looking at it in a browser) and
    /// prints the summary table.
    #[test]
    fn demo_report() {
        if let Ok(dir) = std::env::var("LRID_REPORT_DEMO") {
            write_report(&fixture(), Path::new(&dir)).unwrap();
            write_report(&grid_fixture(), &Path::new(&dir).join("grid")).unwrap();
            println!("{}", summary_table(&fixture()));
        }
    }
}
