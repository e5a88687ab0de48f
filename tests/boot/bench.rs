//! The boot benchmark (not a test: it asserts nothing about time): `make bench-boot`. Boots
//! the lab live system N times (ZLIVE_BENCH_RUNS, default 3) for each case, the cases taking
//! turns, and prints the median time from kernel start to switch-root and to the live root's
//! init, the persistence overhead, and the critical chain of a seed boot.

use crate::harness::{Boot, Lab, Pool};

const SEED_LAYOUT: &str =
    "/etc union\n/usr union\n/var union\n/home union\n/root union\n/srv union\n/opt union\n";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Seconds since kernel start of the switch to the live root, and of the live root's agent.
fn times(b: &Boot) -> (f64, f64) {
    let switch = b
        .serial
        .lines()
        .find(|l| l.contains("Switching root."))
        .and_then(crate::harness::timing::printk_seconds)
        .unwrap_or(f64::NAN);
    let live = b
        .serial
        .lines()
        .find_map(|l| l.strip_prefix("ZLIVE-AGENT-START uptime="))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (switch, live)
}

/// What the persistence overhead is weighed against, from one boot's journal.
#[derive(Clone, Debug)]
struct Steps {
    /// When udev's coldplug started: the zfs module load, running beside dracut's early
    /// hooks, delays it by the part of the load that cannot overlap.
    coldplug: f64,
    /// How long zlive-import@dpool.service ran, in boots that import.
    import: Option<f64>,
}

impl Steps {
    fn of(b: &Boot) -> Steps {
        Steps {
            coldplug: b.at("Starting systemd-udev-trigger").unwrap_or_else(|| {
                panic!("{}: no start of udev's coldplug in the journal", b.name)
            }),
            import: b.step("zlive-import@").map(|(start, end)| end - start),
        }
    }
}

/// The overhead against its budget: the part of the module load that cannot overlap (how
/// much later coldplug starts than without persistence), plus the import, plus 0.5 s. And
/// the two failure cases against theirs. Figures for the record, not assertions.
fn print_budget(medians: &[f64], steps: &[Vec<Steps>]) {
    let coldplug = |case: usize| median(steps[case].iter().map(|s| s.coldplug).collect());
    let module_load = (coldplug(1) - coldplug(0)).max(0.0);
    let import = median(
        steps[1]
            .iter()
            .map(|s| {
                s.import
                    .expect("a seed boot without zlive-import@dpool.service")
            })
            .collect(),
    );
    let budget = module_load + import + 0.5;
    let overhead = medians[1] - medians[0];
    let verdict = |within: bool, by: f64| {
        if within {
            "within".to_owned()
        } else {
            format!("over by {by:.2} s")
        }
    };
    println!(
        "  overhead budget: module load that cannot overlap {module_load:.2} s (coldplug starts that much later) + import {import:.2} s + 0.5 s = {budget:.2} s; the overhead is {}",
        verdict(overhead <= budget, overhead - budget)
    );
    let no_volume = medians[2] - medians[1];
    println!(
        "  pool without the volume within 1 s of the seed boot: {}",
        verdict(no_volume <= 1.0, no_volume - 1.0)
    );
    let missing = medians[3] - medians[0];
    println!(
        "  missing named pool within the pool wait (persistence-zpool-timeout=, {POOL_WAIT:.0} s) of no persistence: {}",
        verdict(missing <= POOL_WAIT, missing - POOL_WAIT)
    );
}

/// persistence-zpool-timeout='s default.
const POOL_WAIT: f64 = zlive::cmdline::DEFAULT_POOL_TIMEOUT as f64;

#[test]
#[ignore = "the boot benchmark; run by make bench-boot"]
fn bench_boot_critical_path() {
    let runs: usize = std::env::var("ZLIVE_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let labs = [
        (
            "no persistence",
            Lab::new("bench-none", &Pool::with_conf(SEED_LAYOUT))
                .cmdline("boot=live noeject skipconfig quiet splash"),
        ),
        (
            "seed layout, 7 union entries",
            Lab::new("bench-seed", &Pool::with_conf(SEED_LAYOUT)),
        ),
        (
            "pool without the volume",
            Lab::new(
                "bench-no-volume",
                &Pool::with_conf(SEED_LAYOUT).first(|v| v.label("other")),
            ),
        ),
        (
            "missing named pool",
            Lab::new("bench-missing-pool", &Pool::blank()),
        ),
        (
            "seed layout on a dataset",
            Lab::new("bench-dataset", &Pool::dataset_with_conf(SEED_LAYOUT)).cmdline(&format!(
                "{} persistence-dataset=dpool/live",
                crate::harness::SEED
            )),
        ),
    ];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); labs.len()];
    let mut steps: Vec<Vec<Steps>> = vec![Vec::new(); labs.len()];
    let (mut chain, mut dataset_chain) = (String::new(), String::new());
    for run in 0..runs {
        for (i, (_, lab)) in labs.iter().enumerate() {
            let b = lab.boot(run + 1, "");
            b.assert_agent_ok();
            results[i].push(times(&b));
            steps[i].push(Steps::of(&b));
            if i == 4 {
                dataset_chain = b.section("critical-chain").to_owned();
            }
            if i == 1 {
                chain = b.section("critical-chain").to_owned();
                // A seed boot's chain passes through the pool's import; a chain that stops
                // short of it was not read right.
                assert!(
                    chain.starts_with("initrd.target @")
                        && chain.contains("zlive-import@dpool.service @"),
                    "{}: no critical chain through the import was captured:\n{chain}",
                    b.name
                );
            }
        }
    }
    report(runs, &labs, &results, &steps, [&chain, &dataset_chain]);
}

/// Print the medians, the differences between cases, the budget and the two chains.
fn report(
    runs: usize,
    labs: &[(&str, Lab)],
    results: &[Vec<(f64, f64)>],
    steps: &[Vec<Steps>],
    chains: [&str; 2],
) {
    println!(
        "\nBOOT BENCHMARK ({runs} runs per case, accel {}): median seconds from kernel start",
        crate::harness::images().accel
    );
    let mut medians = Vec::new();
    for ((name, _), r) in labs.iter().zip(results) {
        let switch = median(r.iter().map(|t| t.0).collect());
        let live = median(r.iter().map(|t| t.1).collect());
        println!("  {name:<32} switch-root {switch:6.2}   live root {live:6.2}");
        medians.push(switch);
    }
    println!(
        "  persistence overhead (seed - none): {:.2} s",
        medians[1] - medians[0]
    );
    println!(
        "  pool without the volume - seed:     {:.2} s",
        medians[2] - medians[1]
    );
    println!(
        "  missing named pool - none:          {:.2} s",
        medians[3] - medians[0]
    );
    println!(
        "  seed layout on a dataset - on a zvol: {:.2} s",
        medians[4] - medians[1]
    );
    print_budget(&medians, steps);
    for (what, chain) in ["seed boot", "seed boot on a dataset"]
        .into_iter()
        .zip(chains)
    {
        println!(
            "  critical chain of the last {what}, from the initrd's unit timestamps (@ started, + took):"
        );
        for line in chain.lines() {
            println!("    {line}");
        }
    }
}
