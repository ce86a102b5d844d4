//! Readable summaries of result lines, and the side-by-side tables of docs/BENCHMARKS.md.

use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Args)]
pub struct ReportArgs {
    /// Result lines (JSON, one per scenario run).
    #[arg(long)]
    results: std::path::PathBuf,
    /// Markdown placed before the tables (machine, versions, commands).
    #[arg(long)]
    header: Option<std::path::PathBuf>,
    /// Markdown placed after the tables (analysis).
    #[arg(long)]
    footer: Option<std::path::PathBuf>,
    /// Where to write the report.
    #[arg(long)]
    out: std::path::PathBuf,
}

/// (label, JSON pointer, higher is better)
type Metric = (&'static str, &'static str, bool);

fn metrics(scenario: &str) -> &'static [Metric] {
    match scenario {
        "connect-storm" => &[
            ("sockets connected", "/connected", true),
            ("handshakes/s", "/handshakes_per_s", true),
            ("handshakes per server CPU-second", "/handshakes_per_server_cpu_s", true),
            ("handshake p50 (ms)", "/handshake_latency/p50_ms", false),
            ("handshake p99 (ms)", "/handshake_latency/p99_ms", false),
            ("handshake p999 (ms)", "/handshake_latency/p999_ms", false),
        ],
        "idle-hold" => &[
            ("sockets held", "/connected", true),
            ("server RSS per connection (KiB)", "/rss_per_connection_kib", false),
            ("server RSS held (MiB)", "/rss_held_mib", false),
            ("server CPU while idle (%)", "/idle_cpu_percent", false),
        ],
        "fanout" => &[
            ("sockets", "/connected", true),
            ("messages published", "/published", true),
            ("deliveries", "/delivered", true),
            ("lost", "/lost", false),
            ("offered deliveries/s", "/offered_deliveries_per_s", true),
            ("achieved deliveries/s", "/deliveries_per_s", true),
            ("deliveries per server CPU-second", "/deliveries_per_server_cpu_s", true),
            ("Redis CPU (s)", "/redis_cpu_s", false),
            ("deliveries per Redis CPU-second", "/deliveries_per_redis_cpu_s", true),
            ("delivery p50 (ms)", "/delivery_latency/p50_ms", false),
            ("delivery p99 (ms)", "/delivery_latency/p99_ms", false),
            ("delivery p999 (ms)", "/delivery_latency/p999_ms", false),
        ],
        "polling" => &[
            ("sessions connected over polling", "/connected", true),
            ("polling handshakes/s", "/handshakes_per_s", true),
            ("polling handshake p50 (ms)", "/handshake_latency/p50_ms", false),
            ("polling handshake p99 (ms)", "/handshake_latency/p99_ms", false),
            (
                "server RSS per idle polling session (KiB)",
                "/rss_per_connection_kib",
                false,
            ),
            ("server CPU while idle (%)", "/idle_cpu_percent", false),
            ("sessions upgraded to WebSocket", "/upgraded", true),
            ("upgrades per server CPU-second", "/upgrades_per_server_cpu_s", true),
            ("upgrade p50 (ms)", "/upgrade_latency/p50_ms", false),
            ("upgrade p99 (ms)", "/upgrade_latency/p99_ms", false),
        ],
        "inbound" => &[
            ("sockets", "/connected", true),
            ("offered events/s", "/offered_events_per_s", true),
            ("acked (stored) events", "/acked", true),
            ("refused events", "/refused", false),
            ("acked events/s", "/acked_per_s", true),
            ("acked events per server CPU-second", "/acked_per_server_cpu_s", true),
            ("ack p50 (ms)", "/ack_latency/p50_ms", false),
            ("ack p99 (ms)", "/ack_latency/p99_ms", false),
        ],
        "rolling-restart" => &[
            ("clients connected at the end", "/connected", true),
            ("clients that reconnected", "/reconnected", true),
            ("disconnects per client", "/disconnected_per_client", false),
            ("broadcasts lost after a reconnect", "/lost_after_reconnect", false),
            ("broadcasts lost in all (streams, recovery)", "/lost_total", false),
            ("reconnects recovered (streams)", "/recovered_reconnects", true),
            ("all clients back after restart 1 (s)", "/recovery_first_s", false),
            ("all clients back after restart 2 (s)", "/recovery_second_s", false),
        ],
        "jitter" => &[
            ("clients connected at the end", "/connected", true),
            ("broadcasts published", "/published", true),
            ("connections cut", "/cuts", true),
            ("delivered (%)", "/delivered_pct", true),
            ("duplicates", "/duplicates", false),
            ("out of order", "/out_of_order", false),
            ("reconnects recovered (%)", "/recovered_pct", true),
            ("recovery p50 (ms)", "/recovery_p50_ms", false),
            ("recovery p99 (ms)", "/recovery_p99_ms", false),
        ],
        "churn" => &[
            ("observers", "/connected", true),
            ("churn connects", "/churn_connects", true),
            ("messages published", "/published", true),
            ("lost (observers)", "/lost", false),
            ("observers closed by server", "/observers_closed_by_server", false),
            ("delivery p99 (ms)", "/delivery_latency/p99_ms", false),
        ],
        _ => &[],
    }
}

fn number(v: &Value, pointer: &str) -> Option<f64> {
    if pointer == "/rss_held_mib" {
        return v
            .pointer("/rss_held_kib")?
            .as_f64()
            .map(|k| (k / 1024.0 * 10.0).round() / 10.0);
    }
    v.pointer(pointer)?.as_f64()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// One readable paragraph for stderr.
pub fn summary(r: &Value) -> String {
    let scenario = r["scenario"].as_str().unwrap_or("?");
    let mut out = format!(
        "[{} / {} / {} node(s)] connected {}/{}",
        scenario,
        r["system"].as_str().unwrap_or("?"),
        r["nodes"],
        r["connected"],
        r["connections"]
    );
    if r["failed"].as_object().is_some_and(|f| !f.is_empty()) {
        let _ = write!(out, ", failed {}", r["failed"]);
    }
    for (label, pointer, _) in metrics(scenario) {
        if let Some(n) = number(r, pointer) {
            let _ = write!(out, "; {label}: {}", fmt_num(n));
        }
    }
    out
}

pub fn render(args: ReportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.results)?;
    let results: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut out = String::new();
    if let Some(header) = &args.header {
        out.push_str(&std::fs::read_to_string(header)?);
        out.push('\n');
    }
    // One table per scenario variant, in the order they first appear.
    let key = |r: &Value| {
        (
            r["scenario"].as_str().unwrap_or("?").to_string(),
            r["variant"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut tables: Vec<(String, String)> = Vec::new();
    for r in &results {
        if !tables.contains(&key(r)) {
            tables.push(key(r));
        }
    }
    for (scenario, variant) in tables {
        let runs: Vec<&Value> = results
            .iter()
            .filter(|r| key(r) == (scenario.clone(), variant.clone()))
            .collect();
        let scenario = scenario.as_str();
        let systems: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{} ({} node{})",
                    r["system"].as_str().unwrap_or("?"),
                    r["nodes"],
                    if r["nodes"] == 1 { "" } else { "s" }
                )
            })
            .collect();
        if variant.is_empty() {
            let _ = writeln!(out, "### {scenario}\n");
        } else {
            let _ = writeln!(out, "### {scenario}: {variant}\n");
        }
        let _ = writeln!(out, "| | {} | wsgate advantage |", systems.join(" | "));
        let _ = writeln!(out, "|---|{}---|", "---|".repeat(systems.len()));
        let find = |name: &str| runs.iter().find(|r| r["system"] == name).copied();
        for (label, pointer, higher_better) in metrics(scenario) {
            let cells: Vec<String> = runs
                .iter()
                .map(|r| number(r, pointer).map_or("–".into(), fmt_num))
                .collect();
            // A figure no run of this table measured (Redis CPU outside the cluster runs).
            if cells.iter().all(|c| c == "–") {
                continue;
            }
            let ratio = match (
                find("wsgate").and_then(|r| number(r, pointer)),
                find("node").and_then(|r| number(r, pointer)),
            ) {
                (Some(w), Some(n)) if w > 0.0 && n > 0.0 => {
                    let x = if *higher_better { w / n } else { n / w };
                    format!("{x:.1}×")
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "| {label} | {} | {ratio} |", cells.join(" | "));
        }
        let failures: Vec<String> = runs
            .iter()
            .filter(|r| r["failed"].as_object().is_some_and(|f| !f.is_empty()))
            .map(|r| format!("{}: {}", r["system"].as_str().unwrap_or("?"), r["failed"]))
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailed handshakes by reason: {}", failures.join("; "));
        }
        out.push('\n');
    }
    if let Some(footer) = &args.footer {
        out.push_str(&std::fs::read_to_string(footer)?);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "<details><summary>Raw results (one JSON line per run)</summary>\n\n```json"
    );
    for r in &results {
        let _ = writeln!(out, "{r}");
    }
    let _ = writeln!(out, "```\n</details>");
    std::fs::write(&args.out, out)?;
    Ok(())
}
