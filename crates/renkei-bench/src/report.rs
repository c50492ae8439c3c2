//! Results: one row per measurement, printed as a Markdown table (to paste into BENCHMARKS.md) or as JSON,
//! with the machine they were measured on.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub what: String,
    pub figure: f64,
    pub unit: &'static str,
    /// The figure as a fraction of this machine's ceiling, where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Against what the ratio is taken, the target from issue 8, or how it was measured.
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, figure: f64, unit: &'static str) -> Row {
        Row { what: what.into(), figure, unit, ratio: None, note: String::new() }
    }

    pub fn ratio(mut self, of: f64, ceiling: Option<f64>) -> Row {
        self.ratio = ceiling.filter(|c| *c > 0.0).map(|c| of / c);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// Latency rows (p50, p99, p99.9, max) from nanosecond samples.
pub fn latency_rows(what: &str, samples: Vec<u64>, note_p99: &str) -> Vec<Row> {
    let Some([p50, p99, p999, max]) = crate::load::percentiles(samples) else {
        return vec![Row::new(format!("{what} latency"), f64::NAN, "ms").note("no samples")];
    };
    vec![
        Row::new(format!("{what} latency p50"), p50, "ms"),
        Row::new(format!("{what} latency p99"), p99, "ms").note(note_p99),
        Row::new(format!("{what} latency p99.9"), p999, "ms"),
        Row::new(format!("{what} latency max"), max, "ms"),
    ]
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub date: String,
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub rustc: String,
    /// `/proc/loadavg` when the run started: other work on the machine shows here.
    pub loadavg_at_start: String,
    pub build: &'static str,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |k: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let mem_kb: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let mut cpu = field("model name");
        let mhz = field("cpu MHz");
        if !mhz.is_empty() {
            cpu = format!("{cpu} ({mhz} MHz)");
        }
        Machine {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory: format!("{:.1} GiB", mem_kb as f64 / 1024.0 / 1024.0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc,
            loadavg_at_start: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            build: if cfg!(debug_assertions) { "debug (figures not representative)" } else { "release" },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).expect("plain data"));
            return;
        }
        let m = &self.machine;
        println!(
            "Machine: {} × {}, {}, Linux {}, {}, {} build; load average at start {}; {}.\n",
            m.nproc, m.cpu, m.memory, m.kernel, m.rustc, m.build, m.loadavg_at_start, m.date
        );
        println!("| what | figure | unit | ratio to ceiling | note |");
        println!("|---|---:|---|---:|---|");
        for r in &self.rows {
            let ratio = r.ratio.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_default();
            println!("| {} | {} | {} | {} | {} |", r.what, figure(r.figure), r.unit, ratio, r.note);
        }
    }
}

/// Thousands separated above 100, two decimals below 10.
fn figure(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x.abs() >= 100.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures() {
        assert_eq!(super::figure(1234567.4), "1,234,567");
        assert_eq!(super::figure(123.0), "123");
        assert_eq!(super::figure(12.34), "12.3");
        assert_eq!(super::figure(0.123), "0.12");
        assert_eq!(super::figure(-4321.0), "-4,321");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        let [p50, p99, p999, max] = crate::load::percentiles(v).unwrap();
        assert_eq!((p50, p99, p999, max), (500.0, 990.0, 999.0, 1000.0));
    }

    #[test]
    fn bodies_have_the_asked_size_and_parse() {
        let b = crate::load::body("m", 42, 1024);
        assert_eq!(b.len(), 1024);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((v["id"].as_u64(), v["run"].as_str()), (Some(42), Some("m")));
    }
}
