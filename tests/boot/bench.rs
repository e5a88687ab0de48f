//! The boot benchmark (not a test: it asserts nothing about time): `make bench-boot`. Boots
//! the lab live system N times (ZLIVE_BENCH_RUNS, default 3; ZLIVE_BENCH_APPEND adds kernel
//! parameters to every case) for each case, the cases taking
//! turns, and prints the median time from kernel start to switch-root and to the live root's
//! init, the persistence overhead, and the critical chain of a seed boot. Beside zlive, the
//! set-up it replaces: the seed's live-boot initrd (tests/vm/anchor/), on the same kernel,
//! medium, root and pool layout, with and without persistence, and the ratio zlive / seed.

use crate::harness::{seed_initrd, Boot, Lab, Pool, SEED};
use crate::shutdown::SEED_LAYOUT;
use crate::timeline;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every boot's live root starts with this program, which prints when the real init started
/// (`ZLIVE-INIT-START uptime=`): the same point for both initrds (live-boot logs no
/// switch-root).
const INIT_STAMP: &str = "init=/usr/lib/zlive-test/init-stamp";

/// The seed's line without persistence.
const NO_PERSISTENCE: &str = "boot=live noeject skipconfig quiet splash";

/// Seconds since kernel start of the switch to the live root (zlive's initrd only), of the
/// real init's start, and of the live root's agent, without the lab's capture (the fourth), which runs
/// before the switch-root in zlive's initrd only (live-boot's has none) and is no part of
/// either boot.
fn times(b: &Boot) -> (f64, f64, f64, f64) {
    let capture = capture_seconds(b);
    let switch = b
        .serial
        .lines()
        .find(|l| l.contains("Switching root."))
        .and_then(crate::harness::timing::printk_seconds)
        .unwrap_or(f64::NAN);
    // Anywhere in a line: with `quiet`, live-boot's console line may not have ended.
    let stamp = |marker: &str| {
        b.serial
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, t)| t))
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{}: no {marker} on the console", b.name))
    };
    (
        switch - capture,
        stamp("ZLIVE-INIT-START uptime=") - capture,
        stamp("ZLIVE-AGENT-START uptime=") - capture,
        capture,
    )
}

/// How long the lab's capture in the initrd ran (`capture-times`: its first and last step's
/// uptime); 0 for a boot without one.
fn capture_seconds(b: &Boot) -> f64 {
    let stamps: Vec<f64> = b
        .section("capture-times")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    match (stamps.first(), stamps.last()) {
        (Some(first), Some(last)) if stamps.len() > 1 => last - first,
        _ => 0.0,
    }
}

/// What the persistence overhead is weighed against, from one boot's journal.
#[derive(Clone, Debug)]
struct Steps {
    /// When udev's coldplug started: the zfs module load, running beside dracut's early
    /// hooks, delays it by the part of the load that cannot overlap.
    coldplug: f64,
    /// How long zlive-import@dpool.service ran, in boots that import.
    import: Option<f64>,
    /// How long PID 1's reloads took, in seconds, as it logged them ("Reloading finished in
    /// N ms"), generators included.
    reloads: f64,
}

impl Steps {
    fn of(b: &Boot) -> Steps {
        Steps {
            coldplug: b.at("Starting systemd-udev-trigger").unwrap_or_else(|| {
                panic!("{}: no start of udev's coldplug in the journal", b.name)
            }),
            import: b.step("zlive-import@").map(|(start, end)| end - start),
            reloads: b
                .section("journal")
                .lines()
                .filter_map(|l| l.split_once("Reloading finished in ")?.1.split(' ').next())
                .filter_map(|ms| ms.parse::<f64>().ok())
                .sum::<f64>()
                / 1000.0,
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
    let reloads = median(steps[1].iter().map(|s| s.reloads).collect());
    println!("  the seed boot's reload (the second pass), as PID 1 logged it: {reloads:.2} s");
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

/// A volume mounted below /run/live/persistence, or not, as the case wants: a figure of a
/// boot that came up without the persistence it was to have would compare nothing.
const WITH_PERSISTENCE: &str = "grep -q ' /run/live/persistence/' /proc/self/mountinfo || fail 'no persistence volume mounted'\n";
const WITHOUT_PERSISTENCE: &str = "! grep -q ' /run/live/persistence/' /proc/self/mountinfo || fail 'a persistence volume is mounted'\n";

/// One case of the benchmark.
struct Case {
    name: &'static str,
    lab: Lab,
    /// zlive's initrd (its journal has the steps), not the seed's live-boot.
    zlive: bool,
    script: &'static str,
}

fn case(name: &'static str, lab: Lab, cmdline: &str, script: &'static str) -> Case {
    // Kernel parameters for an experiment, on every case alike (ZLIVE_BENCH_APPEND).
    let extra = std::env::var("ZLIVE_BENCH_APPEND").unwrap_or_default();
    Case {
        name,
        // The critical chain is captured only when asked for: it takes seconds under TCG.
        lab: lab.cmdline(&format!("{cmdline} {INIT_STAMP} zlive.test.chain {extra}")),
        zlive: true,
        script,
    }
}

/// The cases, in the order they take turns; `report` reads them by these indices.
fn cases() -> Vec<Case> {
    let seed_pool = || Pool::with_conf(SEED_LAYOUT);
    let named = format!("{SEED} persistence-zpool=dpool");
    let live_boot = |mut c: Case| {
        c.lab = c.lab.with_initrd(seed_initrd());
        c.zlive = false;
        c
    };
    vec![
        case(
            "no persistence",
            Lab::new("bench-none", &seed_pool()),
            NO_PERSISTENCE,
            WITHOUT_PERSISTENCE,
        ),
        case(
            "seed layout, 7 union entries",
            Lab::new("bench-seed", &seed_pool()),
            &named,
            WITH_PERSISTENCE,
        ),
        case(
            "pool without the volume",
            Lab::new("bench-no-volume", &seed_pool().first(|v| v.label("other"))),
            &named,
            WITHOUT_PERSISTENCE,
        ),
        case(
            "missing named pool",
            Lab::new("bench-missing-pool", &Pool::blank()),
            &named,
            WITHOUT_PERSISTENCE,
        ),
        case(
            "seed layout on a dataset",
            Lab::new("bench-dataset", &Pool::dataset_with_conf(SEED_LAYOUT)),
            &format!("{SEED} persistence-dataset=dpool/live"),
            WITH_PERSISTENCE,
        ),
        case(
            "zlive, the seed's line",
            Lab::new("bench-seed-line", &seed_pool()),
            SEED,
            WITH_PERSISTENCE,
        ),
        live_boot(case(
            "live-boot, the seed's line",
            Lab::new("bench-live-boot", &seed_pool()),
            SEED,
            WITH_PERSISTENCE,
        )),
        live_boot(case(
            "live-boot, no persistence",
            Lab::new("bench-live-boot-none", &seed_pool()),
            NO_PERSISTENCE,
            WITHOUT_PERSISTENCE,
        )),
    ]
}

#[test]
#[ignore = "the boot benchmark; run by make bench-boot"]
fn bench_boot_critical_path() {
    let runs: usize = std::env::var("ZLIVE_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let cases = cases();
    let mut results: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); cases.len()];
    let mut steps: Vec<Vec<Steps>> = vec![Vec::new(); cases.len()];
    let (mut chain, mut dataset_chain) = (String::new(), String::new());
    for run in 0..runs {
        for (i, c) in cases.iter().enumerate() {
            let b = c.lab.boot(run + 1, c.script);
            b.assert_agent_ok();
            results[i].push(times(&b));
            if c.zlive {
                steps[i].push(Steps::of(&b));
            }
            if i == 4 {
                dataset_chain = b.section("critical-chain").to_owned();
            }
            if i == 1 {
                chain = b.section("critical-chain").to_owned();
                // A seed boot's chain passes through the volume step, after the pool's import
                // or the image's mount, whichever came last; a chain that stops short of it
                // was not read right.
                assert!(
                    chain.starts_with("initrd.target @")
                        && chain.contains("zlive-volume@persistence.service @"),
                    "{}: no critical chain through the volume step was captured:\n{chain}",
                    b.name
                );
            }
        }
    }
    report(runs, &cases, &results, &steps, [&chain, &dataset_chain]);
}

/// Print the medians, the differences between cases, the comparison with the seed's
/// live-boot, the budget and the two chains.
fn report(
    runs: usize,
    cases: &[Case],
    results: &[Vec<(f64, f64, f64, f64)>],
    steps: &[Vec<Steps>],
    chains: [&str; 2],
) {
    println!(
        "\nBOOT BENCHMARK ({runs} runs per case, accel {}): median seconds from kernel start",
        crate::harness::images().accel
    );
    println!(
        "  (zlive's figures are without the lab's capture before its switch-root: median {:.2} s; live-boot's initrd has none)",
        median(results.iter().flatten().map(|t| t.3).filter(|c| *c > 0.0).collect())
    );
    let (mut medians, mut inits) = (Vec::new(), Vec::new());
    for (c, r) in cases.iter().zip(results) {
        let switch = median(r.iter().map(|t| t.0).collect());
        let init = median(r.iter().map(|t| t.1).collect());
        let live = median(r.iter().map(|t| t.2).collect());
        println!(
            "  {:<32} switch-root {switch:6.2}   real init {init:6.2}   live root agent {live:6.2}",
            c.name
        );
        medians.push(switch);
        inits.push(init);
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
    print_anchor(&inits);
    // The same ratios run by run: the runs vary more than the cases differ.
    let paired = |a: usize, b: usize| {
        results[a]
            .iter()
            .zip(&results[b])
            .map(|(z, s)| format!("{:.2}", z.1 / s.1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "    run by run, zlive / seed: seed's line {}; named pool {}; no persistence {}",
        paired(5, 6),
        paired(1, 6),
        paired(0, 7)
    );
    print_budget(&medians, steps);
    for (what, chain) in ["seed boot", "seed boot on a dataset"]
        .into_iter()
        .zip(chains)
    {
        println!(
            "  critical chain of the last {what}, from the initrd's unit timestamps (@ started, + took):"
        );
        for line in timeline::chain_text(chain).lines() {
            println!("    {line}");
        }
    }
    print_generators(chains[0]);
    draw_timeline(chains[0]);
}

/// What the second pass's reload costs beyond PID 1's own work: every generator runs again.
fn print_generators(chain: &str) {
    let timed = timeline::generators(chain);
    let total: f64 = timed.iter().map(|(_, ms)| ms).sum();
    println!(
        "  generators a reload runs again (each run once more in the last seed boot's initrd): {total:.0} ms in all"
    );
    for (name, ms) in timed {
        println!("    {ms:7.1} ms  {name}");
    }
}

/// The last seed boot's initrd as a picture, beside the benchmark's artifacts. (The seed's
/// live-boot runs shell scripts, not units: it has no phases to draw from timestamps.)
fn draw_timeline(chain: &str) {
    let spans = timeline::spans(chain);
    if spans.is_empty() {
        println!("  no unit times were captured: no timeline picture");
        return;
    }
    let path = crate::harness::artifacts("bench-seed").join("initrd-timeline.svg");
    let title = "zlive's initrd, seed layout (7 union entries), named pool: each unit's start and end, seconds since kernel start (TCG)";
    std::fs::write(&path, timeline::svg(title, &spans)).unwrap();
    println!("  the initrd's timeline: {}", path.display());
}

/// zlive beside the seed's live-boot, kernel start to the real init (medians): the ratios and
/// what persistence adds to each.
fn print_anchor(inits: &[f64]) {
    let (zlive_none, zlive_named, zlive_seed_line) = (inits[0], inits[1], inits[5]);
    let (seed, seed_none) = (inits[6], inits[7]);
    println!("  ZLIVE BESIDE THE SEED'S LIVE-BOOT (kernel start to the real init, medians):");
    println!(
        "    with persistence, the seed's line: live-boot {seed:.2} s, zlive {zlive_seed_line:.2} s: zlive / seed {:.2}",
        zlive_seed_line / seed
    );
    println!(
        "    with persistence, zlive's named-pool line: zlive {zlive_named:.2} s: zlive / seed {:.2}",
        zlive_named / seed
    );
    println!(
        "    without persistence: live-boot {seed_none:.2} s, zlive {zlive_none:.2} s: zlive / seed {:.2}",
        zlive_none / seed_none
    );
    println!(
        "    what persistence adds: live-boot {:.2} s, zlive {:.2} s (the seed's line), {:.2} s (named pool)",
        seed - seed_none,
        zlive_seed_line - zlive_none,
        zlive_named - zlive_none
    );
}
