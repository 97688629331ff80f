//! Result files of `dssmr bench chirper --out DIR`: the finished [`ChirperRecord`]s as data
//! files and plots, written by [`write_all`] into one directory.
//!
//! | file             | content                                                              |
//! |------------------|----------------------------------------------------------------------|
//! | `results.json`   | the records as a JSON array, per-second series included (as `--json`) |
//! | `results.csv`    | one [`ResultRow`] per record: workload, partitions, mode, throughput, latencies, moves, retries, fallbacks, ... |
//! | `timeseries.csv` | one [`SeriesRow`] per second of every run, warm-up included          |
//! | `throughput.png` | commands/s by partition count, one panel per workload, one line per mode (the paper's Figure 4) |
//! | `latency.png`    | p50 and p99 latency by partition count, one panel per workload        |
//! | `moves.png`      | moves/s and commands/s over time of every DS-SMR run, one column per workload; the warm-up is shaded and the start of the measured window marked |
//!
//! Plots are drawn on a bitmap with plotters; their text uses DejaVu Sans from the `dejavu`
//! crate, embedded in the binary, so no system font is needed. Every figure is
//! [`FIGURE_SIZE`] pixels. Missing points are not invented: a figure shows the workloads,
//! partition counts and modes the records have (a note says so when there is nothing to show).
//!
//! This module only writes files from finished records; it runs nothing and reads nothing.

use crate::chirper::{ChirperRecord, Workload};
use crate::error::BoxError;
use crate::run::mode_label;
use crate::{Error, Result, Sample};
use dssmr_engine::app::chirper::UserPlacement;
use dssmr_engine::client::{DestinationPolicy, Mode};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The records as a JSON array.
pub const RESULTS_JSON: &str = "results.json";
/// One row per record.
pub const RESULTS_CSV: &str = "results.csv";
/// One row per second of every run.
pub const TIMESERIES_CSV: &str = "timeseries.csv";
/// Throughput by partition count.
pub const THROUGHPUT_PNG: &str = "throughput.png";
/// Latency percentiles by partition count.
pub const LATENCY_PNG: &str = "latency.png";
/// DS-SMR moves and throughput over time.
pub const MOVES_PNG: &str = "moves.png";

/// Width and height of every figure, in pixels.
pub const FIGURE_SIZE: (u32, u32) = (1280, 960);

/// One row of `results.csv`: a record without its series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The command mix.
    pub workload: Workload,
    /// Partitions of the cluster.
    pub partitions: usize,
    /// `ssmr` or `dssmr`.
    pub mode: Mode,
    /// Closed-loop clients.
    pub clients: usize,
    /// Users in the social graph.
    pub users: u64,
    /// Where users were created (`hash` or `interest`).
    pub placement: UserPlacement,
    /// DS-SMR's destination policy (`affinity`, `majority` or `random`).
    pub destination: DestinationPolicy,
    /// Commands completed per second in the measured window.
    pub throughput_cps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Variables moved per second.
    pub moves_per_s: f64,
    /// Retry replies per second.
    pub retries_per_s: f64,
    /// Commands run spread over several partitions per second (affinity policy).
    pub spreads_per_s: f64,
    /// Oracle consults per second.
    pub consults_per_s: f64,
    /// Share of commands whose variables were all in the location cache.
    pub cache_hit_ratio: f64,
    /// Commands that fell back to S-SMR.
    pub fallbacks: u64,
    /// Commands completed in the measured window.
    pub commands: u64,
    /// Commands that failed in the measured window.
    pub errors: u64,
    /// Of those, commands whose outcome is unknown.
    pub indeterminate: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Seconds spent creating the users.
    pub setup_s: f64,
}

impl ResultRow {
    /// The header of `results.csv`, in the order of the fields.
    pub const COLUMNS: [&'static str; 22] = [
        "workload",
        "partitions",
        "mode",
        "clients",
        "users",
        "placement",
        "destination",
        "throughput_cps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "moves_per_s",
        "retries_per_s",
        "spreads_per_s",
        "consults_per_s",
        "cache_hit_ratio",
        "fallbacks",
        "commands",
        "errors",
        "indeterminate",
        "duration_s",
        "setup_s",
    ];
}

impl From<&ChirperRecord> for ResultRow {
    fn from(r: &ChirperRecord) -> Self {
        let m = &r.measured;
        ResultRow {
            workload: r.workload,
            partitions: r.partitions,
            mode: r.mode,
            clients: r.clients,
            users: r.users,
            placement: r.placement,
            destination: r.destination,
            throughput_cps: m.throughput_cps,
            p50_ms: m.p50_ms,
            p95_ms: m.p95_ms,
            p99_ms: m.p99_ms,
            moves_per_s: m.moves_per_s,
            retries_per_s: m.retries_per_s,
            spreads_per_s: m.spreads_per_s,
            consults_per_s: m.consults_per_s,
            cache_hit_ratio: m.cache_hit_ratio,
            fallbacks: m.fallbacks,
            commands: m.commands,
            errors: m.errors,
            indeterminate: m.indeterminate,
            duration_s: m.duration_s,
            setup_s: r.setup_s,
        }
    }
}

/// One row of `timeseries.csv`: one second of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesRow {
    /// The run's command mix.
    pub workload: Workload,
    /// The run's partitions.
    pub partitions: usize,
    /// The run's mode.
    pub mode: Mode,
    /// End of the second, in seconds since the load started (warm-up included).
    pub t_s: f64,
    /// Whether the second lies in the measured window.
    pub measured: bool,
    /// Commands completed per second.
    pub throughput_cps: f64,
    /// Variables moved per second.
    pub moves_per_s: f64,
    /// Retry replies per second.
    pub retries_per_s: f64,
    /// Commands run spread over several partitions per second.
    pub spreads_per_s: f64,
}

impl SeriesRow {
    /// The header of `timeseries.csv`, in the order of the fields.
    pub const COLUMNS: [&'static str; 9] = [
        "workload",
        "partitions",
        "mode",
        "t_s",
        "measured",
        "throughput_cps",
        "moves_per_s",
        "retries_per_s",
        "spreads_per_s",
    ];

    fn new(r: &ChirperRecord, s: &Sample) -> Self {
        SeriesRow {
            workload: r.workload,
            partitions: r.partitions,
            mode: r.mode,
            t_s: s.t_s,
            measured: s.measured,
            throughput_cps: s.throughput_cps,
            moves_per_s: s.moves_per_s,
            retries_per_s: s.retries_per_s,
            spreads_per_s: s.spreads_per_s,
        }
    }
}

/// What writing or drawing one file gives: the lower-layer error is boxed, and [`write_all`]
/// names the file ([`Error::WriteFile`]).
type Drawn<T = ()> = std::result::Result<T, BoxError>;

/// A writer of one result file.
type Writer = fn(&Path, &[ChirperRecord]) -> Drawn;

/// Writes every result file of `records` into `dir` (created if missing) and returns their
/// paths. Stops at the first file that cannot be written; the error names it.
pub fn write_all(dir: &Path, records: &[ChirperRecord]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let files: [(&str, Writer); 6] = [
        (RESULTS_JSON, write_json),
        (RESULTS_CSV, write_results_csv),
        (TIMESERIES_CSV, write_timeseries_csv),
        (THROUGHPUT_PNG, plot_throughput),
        (LATENCY_PNG, plot_latency),
        (MOVES_PNG, plot_moves),
    ];
    files
        .into_iter()
        .map(|(name, write)| {
            let path = dir.join(name);
            match write(&path, records) {
                Ok(()) => Ok(path),
                Err(source) => Err(Error::WriteFile { path, source }),
            }
        })
        .collect()
}

/// `results.json`: the records as a pretty JSON array.
fn write_json(path: &Path, records: &[ChirperRecord]) -> Drawn {
    std::fs::write(path, serde_json::to_string_pretty(records)?)?;
    Ok(())
}

/// `results.csv`: the header, then one [`ResultRow`] per record.
fn write_results_csv(path: &Path, records: &[ChirperRecord]) -> Drawn {
    write_csv(
        path,
        &ResultRow::COLUMNS,
        records.iter().map(ResultRow::from),
    )
}

/// `timeseries.csv`: the header, then one [`SeriesRow`] per second of every run.
fn write_timeseries_csv(path: &Path, records: &[ChirperRecord]) -> Drawn {
    let rows = records
        .iter()
        .flat_map(|r| r.measured.series.iter().map(|s| SeriesRow::new(r, s)));
    write_csv(path, &SeriesRow::COLUMNS, rows)
}

/// Writes `columns` as the header (also when there are no rows), then `rows`.
fn write_csv<T: Serialize>(path: &Path, columns: &[&str], rows: impl Iterator<Item = T>) -> Drawn {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_path(path)?;
    w.write_record(columns)?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}

/// The font family every text of the plots uses (plotters' default family).
const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu fonts with plotters, once per process.
fn register_fonts() -> Drawn {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let fonts = [
            (FONT, FontStyle::Normal, dejavu::sans::regular()),
            (FONT, FontStyle::Bold, dejavu::sans::bold()),
            ("serif", FontStyle::Normal, dejavu::sans::regular()),
            ("monospace", FontStyle::Normal, dejavu::sans_mono::regular()),
        ];
        fonts
            .into_iter()
            .all(|(name, style, bytes)| plotters::style::register_font(name, style, bytes).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu font does not parse".into())
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// S-SMR's colour in every figure.
const SSMR_COLOR: RGBColor = RGBColor(214, 39, 40);
/// DS-SMR's colour in every figure.
const DSSMR_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Colours of the runs of one panel over time (by partition count).
const RUN_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);

fn mode_color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Ssmr => SSMR_COLOR,
        Mode::Dssmr => DSSMR_COLOR,
    }
}

/// Opens a figure at `path`: a white canvas with `title`, the area below it.
fn figure<'a>(path: &'a Path, title: &str) -> Drawn<Area<'a>> {
    register_fonts()?;
    let root = BitMapBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.margin(8, 0, 0, 0);
    Ok(root.titled(title, (FONT, 26).into_font().style(FontStyle::Bold))?)
}

/// Writes the figure to its file.
fn finish(area: Area<'_>) -> Drawn {
    area.present()?;
    Ok(())
}

/// Draws `text` in the middle of an empty figure.
fn note(area: &Area<'_>, text: &str) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 22).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(())
}

/// Rows and columns of a grid of `n` panels: one row up to 3 panels, else two columns.
fn grid(n: usize) -> (usize, usize) {
    match n {
        0 | 1 => (1, 1),
        2 | 3 => (1, n),
        _ => (n.div_ceil(2), 2),
    }
}

/// The workloads of `records`, in the paper's order.
fn workloads(records: &[&ChirperRecord]) -> Vec<Workload> {
    Workload::ALL
        .into_iter()
        .filter(|w| records.iter().any(|r| r.workload == *w))
        .collect()
}

/// The partition counts of `records`, ascending.
fn partition_counts(records: &[&ChirperRecord]) -> Vec<usize> {
    let mut counts: Vec<usize> = records.iter().map(|r| r.partitions).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Pixels around the plot inside a panel: caption, x labels and margins.
const PANEL_CHROME_PX: u32 = 110;
/// Font size of legend entries.
const LEGEND_FONT: u32 = 15;

/// The top of a value axis showing `values` in a panel `panel_px` high whose upper corner
/// holds a legend of `entries` lines: high enough that no value reaches the legend (1 when
/// there is nothing above 0).
fn axis_top(values: impl Iterator<Item = f64>, panel_px: u32, entries: usize) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    let plot_px = f64::from(panel_px.saturating_sub(PANEL_CHROME_PX).max(1));
    let legend_px = (entries as f64) * f64::from(LEGEND_FONT + 8) + 30.0;
    max / (1.0 - (legend_px / plot_px).clamp(0.1, 0.6))
}

/// A tick label of a value axis whose top is `top`.
fn tick(v: f64, top: f64) -> String {
    if top >= 20.0 {
        format!("{v:.0}")
    } else if top >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A value of a record to plot.
type Metric = fn(&ChirperRecord) -> f64;

/// The sample of a line in a legend, at `(x, y)` in pixels.
fn legend_line<DB: DrawingBackend>(
    x: i32,
    y: i32,
    style: ShapeStyle,
    dashed: bool,
) -> DynElement<'static, DB, (i32, i32)> {
    let points = vec![(x, y), (x + 24, y)];
    if dashed {
        DashedPathElement::new(points, 6, 4, style).into_dyn()
    } else {
        PathElement::new(points, style).into_dyn()
    }
}

/// One line of a panel by partition count: `(index in the axis, value)` points.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(usize, f64)>,
}

/// A panel with the partition counts `axis` as categories on x and `lines` over them.
fn partitions_panel(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    axis: &[usize],
    lines: &[Line],
) -> Drawn {
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let top = axis_top(values, area.dim_in_pixel().1, lines.len());
    let last = axis.len().saturating_sub(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..top)?;
    let x_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => axis.get(*i).map(ToString::to_string).unwrap_or_default(),
        SegmentValue::Exact(_) | SegmentValue::Last => String::new(),
    };
    let y_label = |v: &f64| tick(*v, top);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID_COLOR)
        .x_desc("partitions")
        .y_desc(y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .draw()?;
    for line in lines {
        let style = ShapeStyle::from(&line.color).stroke_width(3);
        let points: Vec<(SegmentValue<usize>, f64)> = line
            .points
            .iter()
            .map(|&(i, y)| (SegmentValue::CenterOf(i), y))
            .collect();
        let dashed = line.dashed;
        let series = if dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 10, 6, style))?
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        };
        series
            .label(line.label.as_str())
            .legend(move |(x, y)| legend_line(x, y, style, dashed));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 5, style.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, LEGEND_FONT))
        .draw()?;
    Ok(())
}

/// The modes of `records`, S-SMR first.
fn modes(records: &[&ChirperRecord]) -> Vec<Mode> {
    [Mode::Ssmr, Mode::Dssmr]
        .into_iter()
        .filter(|m| records.iter().any(|r| r.mode == *m))
        .collect()
}

/// The points of `records` under `mode` on the partition `axis`, valued by `value`.
fn by_partitions(
    records: &[&ChirperRecord],
    mode: Mode,
    axis: &[usize],
    value: impl Fn(&ChirperRecord) -> f64,
) -> Vec<(usize, f64)> {
    let mut points: Vec<(usize, f64)> = records
        .iter()
        .filter(|r| r.mode == mode)
        .filter_map(|r| {
            let i = axis.iter().position(|p| *p == r.partitions)?;
            Some((i, value(r)))
        })
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

/// Draws one panel per workload of `records`, each from `lines(workload's records, axis)`.
fn per_workload(
    path: &Path,
    title: &str,
    y_desc: &str,
    records: &[ChirperRecord],
    lines: impl Fn(&[&ChirperRecord], &[usize]) -> Vec<Line>,
) -> Drawn {
    let area = figure(path, title)?;
    let all: Vec<&ChirperRecord> = records.iter().collect();
    let workloads = workloads(&all);
    if workloads.is_empty() {
        note(&area, "no run finished")?;
    }
    let axis = partition_counts(&all);
    for (panel, workload) in area
        .split_evenly(grid(workloads.len()))
        .iter()
        .zip(&workloads)
    {
        let of: Vec<&ChirperRecord> = all
            .iter()
            .copied()
            .filter(|r| r.workload == *workload)
            .collect();
        partitions_panel(panel, workload.name(), y_desc, &axis, &lines(&of, &axis))?;
    }
    finish(area)
}

/// `throughput.png`: commands/s by partition count, one panel per workload and one line per
/// mode (the paper's Figure 4).
fn plot_throughput(path: &Path, records: &[ChirperRecord]) -> Drawn {
    per_workload(
        path,
        "Chirper throughput by partitions",
        "commands/s",
        records,
        |of, axis| {
            modes(of)
                .into_iter()
                .map(|mode| Line {
                    label: mode_label(mode).to_string(),
                    color: mode_color(mode),
                    dashed: false,
                    points: by_partitions(of, mode, axis, |r| r.measured.throughput_cps),
                })
                .collect()
        },
    )
}

/// `latency.png`: p50 (solid) and p99 (dashed) latency by partition count, one panel per
/// workload, one colour per mode.
fn plot_latency(path: &Path, records: &[ChirperRecord]) -> Drawn {
    per_workload(
        path,
        "Chirper latency by partitions (p50 solid, p99 dashed)",
        "latency (ms)",
        records,
        |of, axis| {
            let mut lines = Vec::new();
            for mode in modes(of) {
                let quantiles: [(&str, Metric, bool); 2] = [
                    ("p50", |r| r.measured.p50_ms, false),
                    ("p99", |r| r.measured.p99_ms, true),
                ];
                for (name, value, dashed) in quantiles {
                    lines.push(Line {
                        label: format!("{} {name}", mode_label(mode)),
                        color: mode_color(mode),
                        dashed,
                        points: by_partitions(of, mode, axis, value),
                    });
                }
            }
            lines
        },
    )
}

/// When the measured window of a run began, in seconds since its load started: its last
/// second's end less the measured duration (the window closes with the last sample).
fn window_start(record: &ChirperRecord) -> Option<f64> {
    let last = record.measured.series.last()?;
    Some((last.t_s - record.measured.duration_s).max(0.0))
}

/// A panel of `runs` over time, valued by `value`, each coloured by the place of its partition
/// count in `axis`; the warm-up (before the earliest window start) is shaded and every run's
/// window start marked.
fn time_panel(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    runs: &[&ChirperRecord],
    axis: &[usize],
    value: fn(&Sample) -> f64,
) -> Drawn {
    let samples = || runs.iter().flat_map(|r| r.measured.series.iter());
    let end = samples().map(|s| s.t_s).fold(0.0, f64::max);
    let end = if end > 0.0 { end * 1.02 } else { 1.0 };
    let starts: Vec<f64> = runs.iter().filter_map(|r| window_start(r)).collect();
    let first_start = starts.iter().copied().reduce(f64::min);
    let warmup = first_start.is_some_and(|t| t > 0.0);
    let entries = runs.len() + usize::from(warmup) + usize::from(first_start.is_some());
    let top = axis_top(samples().map(value), area.dim_in_pixel().1, entries);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    let x_label = |v: &f64| tick(*v, end);
    let y_label = |v: &f64| tick(*v, top);
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID_COLOR)
        .x_desc("seconds since the load started")
        .y_desc(y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()?;
    if let Some(first) = first_start.filter(|_| warmup) {
        let shade = RGBColor(200, 200, 200).mix(0.35).filled();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (first, top)],
                shade,
            )))?
            .label("warm-up")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 24, y + 6)], shade));
    }
    for run in runs {
        let i = axis.iter().position(|p| *p == run.partitions).unwrap_or(0);
        let color = RUN_COLORS[i % RUN_COLORS.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let points: Vec<(f64, f64)> = run
            .measured
            .series
            .iter()
            .map(|s| (s.t_s, value(s)))
            .collect();
        let partitions = match run.partitions {
            1 => "1 partition".to_string(),
            n => format!("{n} partitions"),
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(partitions)
            .legend(move |(x, y)| legend_line(x, y, style, false));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, style.filled())),
        )?;
    }
    let marker = ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(2);
    for (i, start) in starts.iter().enumerate() {
        let series = chart.draw_series(DashedLineSeries::new(
            vec![(*start, 0.0), (*start, top)],
            8,
            6,
            marker,
        ))?;
        if i == 0 {
            series
                .label("measured window starts")
                .legend(move |(x, y)| legend_line(x, y, marker, true));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, LEGEND_FONT))
        .draw()?;
    Ok(())
}

/// `moves.png`: for every DS-SMR run, users moved per second (top row) and commands per
/// second (bottom row) over time, one column per workload and one line per partition count:
/// moves fall and throughput settles as users reach their communities' partitions.
fn plot_moves(path: &Path, records: &[ChirperRecord]) -> Drawn {
    let area = figure(path, "DS-SMR convergence: moves and throughput over time")?;
    let runs: Vec<&ChirperRecord> = records.iter().filter(|r| r.mode == Mode::Dssmr).collect();
    let workloads = workloads(&runs);
    if workloads.is_empty() {
        note(&area, "no DS-SMR run finished: nothing moved")?;
        return finish(area);
    }
    let axis = partition_counts(&runs);
    let panels = area.split_evenly((2, workloads.len()));
    let (moves_row, throughput_row) = panels.split_at(workloads.len());
    for (i, workload) in workloads.iter().enumerate() {
        let mut of: Vec<&ChirperRecord> = runs
            .iter()
            .copied()
            .filter(|r| r.workload == *workload)
            .collect();
        of.sort_by_key(|r| r.partitions);
        time_panel(
            &moves_row[i],
            &format!("{workload}: users moved"),
            "moves/s",
            &of,
            &axis,
            |s| s.moves_per_s,
        )?;
        time_panel(
            &throughput_row[i],
            &format!("{workload}: throughput"),
            "commands/s",
            &of,
            &axis,
            |s| s.throughput_cps,
        )?;
    }
    finish(area)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Measurement;

    fn sample(t_s: f64, measured: bool, cps: f64, moves: f64) -> Sample {
        Sample {
            t_s,
            measured,
            throughput_cps: cps,
            moves_per_s: moves,
            retries_per_s: moves / 2.0,
            spreads_per_s: moves / 4.0,
        }
    }

    /// A run of 1 s warm-up and 3 s measured whose moves fade out.
    fn record(workload: Workload, partitions: usize, mode: Mode, cps: f64) -> ChirperRecord {
        let moves = if mode == Mode::Dssmr { 40.0 } else { 0.0 };
        ChirperRecord {
            workload,
            mode,
            partitions,
            clients: 8,
            users: 300,
            placement: UserPlacement::Hash,
            destination: DestinationPolicy::Affinity,
            measured: Measurement {
                throughput_cps: cps,
                p50_ms: 2.0 + partitions as f64,
                p95_ms: 4.0,
                p99_ms: 9.5 * partitions as f64,
                moves_per_s: moves / 4.0,
                retries_per_s: moves / 8.0,
                spreads_per_s: moves / 16.0,
                consults_per_s: 1.0,
                cache_hit_ratio: 0.75,
                fallbacks: 3,
                commands: (cps * 3.0) as u64,
                errors: 1,
                indeterminate: 0,
                duration_s: 3.0,
                series: (1..=4)
                    .map(|t| {
                        let t = f64::from(t);
                        sample(t, t > 1.0, cps * t / 4.0, moves / t)
                    })
                    .collect(),
            },
            setup_s: 0.5,
        }
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).expect("read png");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (be(16), be(20))
    }

    fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> (Vec<String>, Vec<T>) {
        let mut reader = csv::Reader::from_path(path).expect("open csv");
        let header = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let rows = reader
            .deserialize()
            .collect::<Result<Vec<T>, _>>()
            .expect("rows");
        (header, rows)
    }

    fn check_files(dir: &Path, records: &[ChirperRecord]) {
        let written = write_all(dir, records).expect("write");
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                RESULTS_JSON,
                RESULTS_CSV,
                TIMESERIES_CSV,
                THROUGHPUT_PNG,
                LATENCY_PNG,
                MOVES_PNG
            ]
        );
        let json: Vec<ChirperRecord> =
            serde_json::from_str(&std::fs::read_to_string(dir.join(RESULTS_JSON)).unwrap())
                .expect("json records");
        assert_eq!(json.len(), records.len());

        let (header, rows) = read_csv::<ResultRow>(&dir.join(RESULTS_CSV));
        assert_eq!(header, ResultRow::COLUMNS);
        let expected: Vec<ResultRow> = records.iter().map(ResultRow::from).collect();
        assert_eq!(rows, expected);

        let (header, rows) = read_csv::<SeriesRow>(&dir.join(TIMESERIES_CSV));
        assert_eq!(header, SeriesRow::COLUMNS);
        let expected: Vec<SeriesRow> = records
            .iter()
            .flat_map(|r| r.measured.series.iter().map(|s| SeriesRow::new(r, s)))
            .collect();
        assert_eq!(rows, expected);

        for png in [THROUGHPUT_PNG, LATENCY_PNG, MOVES_PNG] {
            assert_eq!(png_size(&dir.join(png)), FIGURE_SIZE, "{png}");
        }
    }

    #[test]
    fn writes_every_file_of_a_full_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut records = Vec::new();
        for workload in [Workload::Timeline, Workload::Post, Workload::Mix] {
            for partitions in [1, 2, 4, 8] {
                for mode in [Mode::Ssmr, Mode::Dssmr] {
                    let cps =
                        1000.0 * partitions as f64 * if mode == Mode::Dssmr { 2.0 } else { 1.0 };
                    records.push(record(workload, partitions, mode, cps));
                }
            }
        }
        check_files(&dir.path().join("new").join("out"), &records);
    }

    #[test]
    fn plots_what_exists_of_sparse_or_empty_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        // One mode, one partition count, no throughput, an empty series.
        let mut idle = record(Workload::Follow, 2, Mode::Ssmr, 0.0);
        idle.measured.series.clear();
        check_files(&dir.path().join("one"), &[idle]);
        // Only DS-SMR, one partition count, nothing moved.
        let mut still = record(Workload::Post, 4, Mode::Dssmr, 500.0);
        for s in &mut still.measured.series {
            s.moves_per_s = 0.0;
        }
        check_files(&dir.path().join("dssmr"), &[still]);
        // No record at all: headers and notes.
        check_files(&dir.path().join("none"), &[]);
        let body = std::fs::read_to_string(dir.path().join("none").join(RESULTS_CSV)).unwrap();
        assert_eq!(body.trim(), ResultRow::COLUMNS.join(","));
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, "not a directory").unwrap();
        let err = write_all(&file, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("plain"), "{err:#}");
    }

    #[test]
    fn window_start_is_the_last_sample_less_the_measured_time() {
        let r = record(Workload::Mix, 2, Mode::Dssmr, 10.0);
        assert_eq!(window_start(&r), Some(1.0));
        let mut empty = r.clone();
        empty.measured.series.clear();
        assert_eq!(window_start(&empty), None);
    }
}
