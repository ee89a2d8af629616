//! Line and grouped bar charts as plain SVG text: a few dozen points per chart do not need a
//! plotting crate (and its font and image dependencies).

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 360.0;
const L: f64 = 70.0;
const R: f64 = 170.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e", "#8c564b", "#e377c2",
];

/// One line: a label and (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound and tick step for 0..max.
fn axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn num(v: f64) -> String {
    if v >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn frame(s: &mut String, title: &str, xlabel: &str, ylabel: &str, xmax: f64, ymax: f64) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        (L + W - R) / 2.0,
        esc(title),
        (L + W - R) / 2.0,
        H - 10.0,
        esc(xlabel),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    let (_, ystep) = axis(ymax);
    let mut y = 0.0;
    while y <= ymax + 1e-9 {
        let py = H - B - (H - B - T) * y / ymax;
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - R,
            L - 5.0,
            py + 4.0,
            num(y)
        );
        y += ystep;
    }
    if xmax > 0.0 {
        let (_, xstep) = axis(xmax);
        let mut x = 0.0;
        while x <= xmax + 1e-9 {
            let px = L + (W - R - L) * x / xmax;
            let _ = writeln!(
                s,
                r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
                H - B + 15.0,
                num(x)
            );
            x += xstep;
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - R - L,
        H - B - T
    );
}

fn legend(s: &mut String, labels: &[&str]) {
    for (i, l) in labels.iter().enumerate() {
        let y = T + 10.0 + 18.0 * i as f64;
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            W - R + 10.0,
            y - 10.0,
            W - R + 27.0,
            y,
            esc(l)
        );
    }
}

/// Lines of y against x, axes from 0.
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (xmax, _) = axis(xmax);
    let (ymax, _) = axis(ymax);
    let mut s = String::new();
    frame(&mut s, title, xlabel, ylabel, xmax, ymax);
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    L + (W - R - L) * x / xmax,
                    H - B - (H - B - T) * y / ymax
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
        }
    }
    let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    legend(&mut s, &labels);
    s.push_str("</svg>\n");
    s
}

/// Grouped bars: one group per category, one bar per series (values by category index; None
/// leaves a gap).
pub fn bars(
    title: &str,
    ylabel: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().flatten().copied())
        .fold(0.0, f64::max);
    let (ymax, _) = axis(ymax);
    let mut s = String::new();
    frame(&mut s, title, "", ylabel, 0.0, ymax);
    let n = categories.len().max(1) as f64;
    let gw = (W - R - L) / n;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = L + gw * ci as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + gw / 2.0,
            H - B + 15.0,
            esc(cat)
        );
        for (si, (_, vals)) in series.iter().enumerate() {
            let Some(Some(v)) = vals.get(ci) else {
                continue;
            };
            let h = (H - B - T) * v / ymax;
            let x = gx + gw * 0.1 + bw * si as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                H - B - h,
                bw * 0.95,
                COLORS[si % COLORS.len()],
                x + bw / 2.0,
                H - B - h - 3.0,
                num(v.round())
            );
        }
    }
    let labels: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    legend(&mut s, &labels);
    s.push_str("</svg>\n");
    s
}
