//! SVG plots of a run for `docs/benchmarks.md`: each request's latency against when it was due
//! (stalls and warm-up effects show as they happened), and a histogram of latencies.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use super::engine::{Run, Sample};
use super::report::Report;

const SIZE: (u32, u32) = (900, 420);

/// Writes `<slug>-latency.svg` and `<slug>-histogram.svg` into `dir`; answers their paths.
pub fn write(dir: &Path, report: &Report, run: &Run) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let slug = slug(&report.scenario);
    let over_time = dir.join(format!("{slug}-latency.svg"));
    let histogram = dir.join(format!("{slug}-histogram.svg"));
    latency_over_time(&over_time, report, run).map_err(|e| anyhow::anyhow!("plotting {}: {e}", over_time.display()))?;
    latency_histogram(&histogram, report, run).map_err(|e| anyhow::anyhow!("plotting {}: {e}", histogram.display()))?;
    Ok(vec![over_time, histogram])
}

/// A file name from a scenario's name: lower case, words joined by dashes.
fn slug(name: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("-")
}

type Plotted = Result<(), Box<dyn std::error::Error>>;

fn latency_over_time(path: &Path, report: &Report, run: &Run) -> Plotted {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = run.elapsed.as_secs_f64().max(0.001);
    let worst = run.samples.iter().map(|s| s.latency.as_secs_f64() * 1000.0).fold(1.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} — {}", report.scenario, report.pace), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..seconds, (0.05..worst * 1.2).log_scale())?;
    chart.configure_mesh().x_desc("seconds into the run").y_desc("latency (ms, log)").draw()?;
    let point = |s: &Sample| (s.due.as_secs_f64(), (s.latency.as_secs_f64() * 1000.0).max(0.05));
    let (ok, other): (Vec<&Sample>, Vec<&Sample>) = run.samples.iter().partition(|s| s.outcome.ok());
    chart
        .draw_series(thinned(&ok).into_iter().map(|s| Circle::new(point(s), 1, BLUE.mix(0.35).filled())))?
        .label("answered as expected")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
    chart
        .draw_series(thinned(&other).into_iter().map(|s| Circle::new(point(s), 2, RED.filled())))?
        .label("other answers")
        .legend(|(x, y)| Circle::new((x, y), 3, RED.filled()));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Points drawn per series at most, besides the slowest hundredth: a run of tens of thousands of
/// requests would otherwise make a plot of megabytes for a page of documentation.
const MAX_POINTS: usize = 4_000;

/// Every n-th of `samples` (n chosen to keep about [`MAX_POINTS`]) and every one at or above their
/// 99th percentile, so that thinning never hides a stall.
fn thinned<'a>(samples: &[&'a Sample]) -> Vec<&'a Sample> {
    if samples.len() <= MAX_POINTS {
        return samples.to_vec();
    }
    let mut latencies: Vec<std::time::Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let stride = samples.len().div_ceil(MAX_POINTS);
    samples.iter().enumerate().filter(|(i, s)| i % stride == 0 || s.latency >= p99).map(|(_, s)| *s).collect()
}

fn latency_histogram(path: &Path, report: &Report, run: &Run) -> Plotted {
    // Buckets of equal width on a log scale: 10 per decade from 0.1 ms.
    const PER_DECADE: f64 = 10.0;
    let bucket = |ms: f64| ((ms.max(0.1) / 0.1).log10() * PER_DECADE).floor() as u32;
    let mut counts = std::collections::BTreeMap::<u32, u32>::new();
    for sample in run.samples.iter().filter(|s| s.outcome.ok()) {
        *counts.entry(bucket(sample.latency.as_secs_f64() * 1000.0)).or_insert(0) += 1;
    }
    let last = counts.keys().next_back().copied().unwrap_or(10) + 1;
    let tallest = counts.values().copied().max().unwrap_or(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} — latency histogram", report.scenario), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((0u32..last).into_segmented(), 0u32..tallest + tallest / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("requests")
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(b) | SegmentValue::Exact(b) => {
                format!("{:.1}", 0.1 * 10f64.powf(f64::from(*b) / PER_DECADE))
            }
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart).style(BLUE.mix(0.6).filled()).margin(1).data(counts.iter().map(|(b, n)| (*b, *n))),
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::engine::Outcome;
    use super::*;

    #[test]
    fn a_run_plots_to_two_svg_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let samples = (0..200u64)
            .map(|i| Sample {
                due: Duration::from_millis(i * 5),
                latency: Duration::from_micros(300 + i * 97),
                outcome: if i % 50 == 0 { Outcome::Status(503) } else { Outcome::Status(201) },
            })
            .collect();
        let run = Run { samples, elapsed: Duration::from_secs(1) };
        let report = Report::of("POST /v1/rooms (one event)", "closed loop, 4 clients".into(), &run);
        let written = write(dir.path(), &report, &run).expect("plots");
        assert_eq!(written.len(), 2);
        for path in written {
            assert!(path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("post-v1-rooms-one-event")));
            let svg = std::fs::read_to_string(&path).expect("svg");
            assert!(svg.starts_with("<svg") && svg.contains("latency"), "{}", &svg[..200.min(svg.len())]);
        }
    }

    #[test]
    fn a_long_run_is_thinned_but_keeps_its_slowest_requests() {
        let samples: Vec<Sample> = (0..50_000u64)
            .map(|i| Sample {
                due: Duration::from_micros(i * 200),
                latency: Duration::from_micros(if i % 1_000 == 7 { 900_000 } else { 1_000 + i % 300 }),
                outcome: Outcome::Status(201),
            })
            .collect();
        let all: Vec<&Sample> = samples.iter().collect();

        let drawn = thinned(&all);

        assert!(drawn.len() <= MAX_POINTS + all.len() / 100 + 1, "{} points drawn", drawn.len());
        let stalls = drawn.iter().filter(|s| s.latency == Duration::from_micros(900_000)).count();
        assert_eq!(stalls, 50, "every stall is drawn");
    }
}
