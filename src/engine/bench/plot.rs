//! Recall vs QPS as an SVG, drawn like ann-benchmarks' plots: recall on x, queries per second
//! on a log y axis, one colour per target, every setting a marker (labelled with its
//! parameters), and a line through each target's Pareto front ("up and to the right is
//! better"). Hand-written SVG: no plotting dependency.

use super::Record;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 600.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SVG document for `records` (recall = `k_recall_at_k`, QPS = `qps_batch`, or
/// `qps_single` when `single`).
pub fn recall_qps_svg(records: &[Record], single: bool, title: &str) -> String {
    let qps = |r: &Record| if single { r.qps_single.unwrap_or(0.0) } else { r.qps_batch };
    let pts: Vec<&Record> = records.iter().filter(|r| qps(r) > 0.0 && qps(r).is_finite()).collect();
    let (mut rmin, mut qmin, mut qmax) = (1.0f64, f64::INFINITY, 0.0f64);
    for r in &pts {
        rmin = rmin.min(r.k_recall_at_k);
        qmin = qmin.min(qps(r));
        qmax = qmax.max(qps(r));
    }
    if pts.is_empty() {
        (qmin, qmax) = (1.0, 10.0);
    }
    let x0 = ((rmin * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    // A little room right of recall 1.0, where the best settings sit.
    let x1 = 1.0 + (1.0 - x0) * 0.03;
    let y0 = qmin.log10().floor();
    let mut y1 = qmax.log10().ceil();
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |r: f64| LEFT + (r - x0) / (x1 - x0) * pw;
    let sy = |q: f64| TOP + ph - (q.log10() - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="17" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    // Grid and ticks: x every 0.05 (0.1 labelled), y every decade with 2..9 minor lines.
    let steps = ((1.0 - x0) / 0.05).round() as i64;
    for i in 0..=steps {
        let v = x0 + i as f64 * 0.05;
        let x = sx(v);
        let major = i % 2 == 0;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{}" stroke-width="1"/>"##,
            TOP + ph,
            if major { "#d0d0d0" } else { "#eeeeee" }
        );
        if major || steps <= 6 {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" font-size="12" text-anchor="middle">{v:.2}</text>"#,
                TOP + ph + 18.0
            );
        }
    }
    let mut e = y0;
    while e <= y1 + 1e-9 {
        let y = sy(10f64.powf(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d0d0" stroke-width="1"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            fmt_qps(10f64.powf(e))
        );
        if e < y1 {
            for m in 2..10 {
                let y = sy(10f64.powf(e) * m as f64);
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#f0f0f0" stroke-width="1"/>"##,
                    LEFT + pw
                );
            }
        }
        e += 1.0;
    }
    let _ = writeln!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let k = records.first().map_or(10, |r| r.k);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" text-anchor="middle">Recall ({k}-recall@{k})</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" font-size="14" text-anchor="middle" transform="rotate(-90 20 {:.1})">Queries per second (1/s){}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        if single { ", single-query" } else { ", batch" }
    );

    // Series, in order of first appearance.
    let mut targets: Vec<&str> = Vec::new();
    for r in &pts {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    for (ti, t) in targets.iter().enumerate() {
        let color = COLORS[ti % COLORS.len()];
        let mut series: Vec<&&Record> = pts.iter().filter(|r| r.target == *t).collect();
        series.sort_by(|a, b| a.k_recall_at_k.total_cmp(&b.k_recall_at_k));
        // Pareto front: walking from high recall down, keep points faster than all so far.
        let mut front: Vec<(f64, f64)> = Vec::new();
        let mut best = 0.0f64;
        for r in series.iter().rev() {
            if qps(r) > best {
                best = qps(r);
                front.push((r.k_recall_at_k, qps(r)));
            }
        }
        front.reverse();
        if front.len() > 1 {
            let path: Vec<String> = front.iter().map(|&(r, q)| format!("{:.1},{:.1}", sx(r), sy(q))).collect();
            let _ =
                writeln!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, path.join(" "));
        }
        for r in &series {
            let (x, y) = (sx(r.k_recall_at_k), sy(qps(r)));
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{}" fill="{color}" stroke="{}" stroke-width="{}"><title>{} {}: recall {:.4}, {:.0} QPS</title></circle>"#,
                if r.chosen { 7 } else { 4 },
                if r.chosen { "black" } else { color },
                if r.chosen { 2 } else { 1 },
                esc(&r.target),
                esc(&r.setting),
                r.k_recall_at_k,
                qps(r)
            );
            if r.setting != "default" {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#444">{}</text>"##,
                    x + 5.0,
                    y - 5.0,
                    esc(&r.setting.replace("nprobe=", "np").replace("efSearch=", "ef"))
                );
            }
        }
        let ly = TOP + 10.0 + ti as f64 * 22.0;
        let lx = LEFT + pw + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
            lx + 24.0
        );
        let _ = writeln!(s, r#"<circle cx="{}" cy="{ly}" r="4" fill="{color}"/>"#, lx + 12.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}" font-size="12">{}</text>"#, lx + 30.0, ly + 4.0, esc(t));
    }
    if records.iter().any(|r| r.chosen) {
        let ly = TOP + 10.0 + targets.len() as f64 * 22.0 + 10.0;
        let lx = LEFT + pw + 20.0;
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{ly}" r="7" fill="none" stroke="black" stroke-width="2"/><text x="{}" y="{}" font-size="12">fastest at target recall</text>"#,
            lx + 12.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_qps(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BuildCost, Record};
    use super::*;

    #[test]
    fn svg_has_one_series_per_target() {
        let r = |t: &str, rec: f64, q: f64| Record {
            target: t.into(),
            index_type: "X".into(),
            shards: 1,
            setting: "nprobe=1".into(),
            nprobe: Some(1),
            ef_search: None,
            k: 10,
            nq: 1,
            recall_at_1: rec,
            recall_at_10: Some(rec),
            recall_at_k: rec,
            k_recall_at_k: rec,
            qps_batch: q,
            qps_single: None,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            nq_single: 0,
            clients: 1,
            pipeline: 1,
            cost: BuildCost::default(),
            pareto: true,
            chosen: false,
            filter: None,
        };
        let svg =
            recall_qps_svg(&[r("IVF<8>", 0.5, 9000.0), r("IVF<8>", 0.9, 2000.0), r("HNSW", 0.99, 500.0)], false, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 3 + 2);
        assert!(svg.contains("IVF&lt;8&gt;"));
    }
}
