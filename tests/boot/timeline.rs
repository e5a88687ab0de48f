//! The benchmark's picture: one boot's initrd as an SVG timeline, drawn from the unit
//! timestamps the lab's capture reads from PID 1 (`critical-chain` after `== unit times`:
//! unit, start, end, in seconds since kernel start). Plain SVG text: a bar per unit. And the
//! generators a reload runs again, as the capture timed them (after `== generators`).

/// What the capture puts before the unit times, and before the generators' times.
const UNITS: &str = "== unit times";
const GENERATORS: &str = "== generators";

/// The lines after `marker`, up to the next part (a line starting with `== `).
fn part<'a>(section: &'a str, marker: &str) -> Option<&'a str> {
    let (_, after) = section.split_once(marker)?;
    Some(after.split("\n== ").next().unwrap_or_default())
}

/// One unit: its name, when it started and when it was up (or done), in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub unit: String,
    pub start: f64,
    pub end: f64,
}

/// The chain part of a capture's `critical-chain` section (what is printed as text).
pub fn chain_text(section: &str) -> &str {
    section.split("== ").next().unwrap_or_default()
}

/// The generators a reload runs again, each with its wall time in milliseconds when run once
/// more in the initrd, slowest first.
pub fn generators(section: &str) -> Vec<(String, f64)> {
    let mut timed: Vec<(String, f64)> = part(section, GENERATORS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, ms) = l.split_once(' ')?;
            Some((name.to_owned(), ms.trim().parse().ok()?))
        })
        .collect();
    timed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    timed
}

/// The spans after the marker, by start time; lines that do not read as `unit start end` are
/// skipped.
pub fn spans(section: &str) -> Vec<Span> {
    let Some(times) = part(section, UNITS) else {
        return Vec::new();
    };
    let mut spans: Vec<Span> = times
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let unit = words.next()?.to_owned();
            let start = words.next()?.parse().ok()?;
            let end = words.next()?.parse().ok()?;
            Some(Span { unit, start, end })
        })
        .collect();
    spans.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.unit.cmp(&b.unit)));
    spans
}

/// Units worth a row: zlive's, the root's and persistence's mounts, and whatever took at least
/// a tenth of a second. Slices, sockets and the like that take no time are left out.
fn worth_a_row(s: &Span) -> bool {
    let ours = [
        "zlive",
        "sysroot",
        "run-live",
        "initrd",
        "zfs",
        "systemd-udev",
        "dracut",
    ];
    ours.iter().any(|p| s.unit.starts_with(p)) || s.end - s.start >= 0.1
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG of one boot: a time axis in seconds and a bar per unit worth a row, zlive's in
/// another colour, the unit's name and duration beside its bar.
pub fn svg(title: &str, spans: &[Span]) -> String {
    let rows: Vec<&Span> = spans.iter().filter(|s| worth_a_row(s)).collect();
    let last = rows.iter().map(|s| s.end).fold(1.0_f64, f64::max).ceil();
    let (left, width, row, top) = (10.0, 900.0, 16.0, 40.0);
    let x = |t: f64| left + t / last * width;
    let height = top + row * rows.len() as f64 + 20.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>\n",
        left * 2.0 + width + 260.0,
        escape(title)
    );
    for second in 0..=last as usize {
        let at = x(second as f64);
        out.push_str(&format!(
            "<line x1=\"{at:.1}\" y1=\"{:.0}\" x2=\"{at:.1}\" y2=\"{:.0}\" stroke=\"#ddd\"/>\n<text x=\"{at:.1}\" y=\"{:.0}\" fill=\"#888\">{second}s</text>\n",
            top - 12.0,
            height - 18.0,
            top - 14.0
        ));
    }
    for (i, s) in rows.iter().enumerate() {
        let y = top + row * i as f64;
        let colour = if s.unit.starts_with("zlive") {
            "#2a7ab8"
        } else {
            "#9aa5b1"
        };
        let w = (x(s.end) - x(s.start)).max(1.0);
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"{:.0}\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{:.0}\">{} {:.2}s</text>\n",
            x(s.start),
            row - 4.0,
            x(s.end) + 4.0,
            y + row - 6.0,
            escape(&s.unit),
            s.end - s.start
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: &str = "initrd.target @21.340s\n  initrd-fs.target @21.313s\n== unit times\n\
        zlive-import@dpool.service 13.690 16.609\n-.slice 5.946 5.946\nsysroot.mount 18.557 18.746\n\
        not a line\nsystem.slice 5.947 5.947\n== generators\nsystemd-fstab-generator 12.5\nzlive-generator 30.1\nbroken\n";

    #[test]
    fn the_chain_and_the_spans_are_read_apart() {
        assert_eq!(
            chain_text(SECTION),
            "initrd.target @21.340s\n  initrd-fs.target @21.313s\n"
        );
        let read = spans(SECTION);
        let names: Vec<&str> = read.iter().map(|s| s.unit.as_str()).collect();
        assert_eq!(
            names,
            [
                "-.slice",
                "system.slice",
                "zlive-import@dpool.service",
                "sysroot.mount"
            ]
        );
        assert!(spans(chain_text(SECTION)).is_empty());
        assert_eq!(
            generators(SECTION),
            [
                ("zlive-generator".to_owned(), 30.1),
                ("systemd-fstab-generator".to_owned(), 12.5)
            ]
        );
        assert!(generators(chain_text(SECTION)).is_empty());
    }

    #[test]
    fn the_picture_has_a_bar_for_each_unit_worth_a_row() {
        let picture = svg("a <seed> boot", &spans(SECTION));
        assert!(picture.starts_with("<svg") && picture.ends_with("</svg>\n"));
        assert!(picture.contains("a &lt;seed&gt; boot"));
        assert!(picture.contains(">zlive-import@dpool.service 2.92s<"));
        assert!(picture.contains(">sysroot.mount 0.19s<"));
        // Slices take no time: no row.
        assert!(!picture.contains("system.slice"));
        assert_eq!(picture.matches("<rect").count(), 1 + 2);
        // The axis runs to the last unit's end, rounded up: 19 s.
        assert!(picture.contains(">19s<") && !picture.contains(">20s<"));
    }
}
