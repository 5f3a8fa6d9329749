//! Writing a report: `report.md`, a self-contained `report.html` and
//! `plots/*.{png,svg}`.

use crate::ReportError;
use crate::data::{
    MeasuredPoint, SeriesPlot, StudyInput, anytime_curves, anytime_plot, convergence_plot,
    front_plot, hypervolume_plot, level_by_layer, profile_heatmap, series_groups,
};
use crate::stats::{Verdict, paired_bootstrap};
use std::fmt::Write as _;
use std::path::Path;

/// "KL ± its standard error over the held-out windows", or the KL alone for
/// studies measured before windows were kept.
fn kl_cell(m: &MeasuredPoint) -> String {
    let (_, se) = evocomp_search::racing::mean_and_standard_error(&m.kl_windows);
    if se.is_finite() {
        format!("{:.4} ± {:.4}", m.held_out_kl, se)
    } else {
        format!("{:.4}", m.held_out_kl)
    }
}

/// `a` against `b` on the same held-out windows: the KL difference with its
/// 95% paired bootstrap interval and the verdict; None where the windows
/// are not the same ones (another held-out sample, or none kept).
fn against(a: (&MeasuredPoint, &StudyInput), b: (&MeasuredPoint, &StudyInput)) -> Option<String> {
    let same = a.1.held_out_id.is_some() && a.1.held_out_id == b.1.held_out_id;
    if !same || a.0.kl_windows.len() < 2 || a.0.kl_windows.len() != b.0.kl_windows.len() {
        return None;
    }
    let d = paired_bootstrap(&a.0.kl_windows, &b.0.kl_windows, 10_000, 0.95, 0)?;
    let word = match d.verdict() {
        Verdict::Better => "better",
        Verdict::Worse => "worse",
        Verdict::Tie => "tie",
    };
    Some(format!(
        "{:+.4} [{:+.4}, {:+.4}] {word}",
        d.mean, d.lo, d.hi
    ))
}

/// The report's tables as Markdown.
pub fn markdown(studies: &[StudyInput], plots: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# evocomp report\n");
    summary_table(&mut md, studies);
    per_budget_table(&mut md, studies);
    anytime_table(&mut md, studies);
    fronts_and_layers(&mut md, studies);
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let _ = writeln!(md, "![{p}](plots/{p}.png)");
        }
    }
    md
}

/// One row per study: its best configuration and what the search cost.
fn summary_table(md: &mut String, studies: &[StudyInput]) {
    let _ = writeln!(
        md,
        "| study | strategy | budget | size | cost | held-out KL ± s.e. | held-out perplexity | evaluations | cache hits | search time (s) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for s in studies {
        let b = &s.best;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} {} | {} | {:.2} | {} | {} | {:.0} |",
            s.name,
            s.strategy,
            s.budget,
            crate::user_cost(s, b),
            b.cost,
            s.cost_unit,
            kl_cell(b),
            b.held_out_perplexity,
            s.evaluations,
            s.cache_hits,
            s.seconds
        );
    }
}

/// The best configuration per budget: every series side by side, the best
/// of a row in bold.
fn per_budget_table(md: &mut String, studies: &[StudyInput]) {
    let mut budgets: Vec<&str> = Vec::new();
    for s in studies {
        if !budgets.contains(&s.budget.as_str()) {
            budgets.push(&s.budget);
        }
    }
    let groups = series_groups(studies);
    if groups.len() > 1 && !budgets.is_empty() {
        let _ = writeln!(
            md,
            "\n## Held-out KL (perplexity) per budget\n\nKL ± its standard error over the \
             held-out windows; the lowest KL of each row in bold (KL to the uncompressed model \
             is what the search minimises). Where two studies were measured on the same \
             windows, each other cell gives its KL difference from the bold one with a paired \
             bootstrap 95% interval: worse where the interval excludes zero, else tie. \
             `evocomp compare` does the same on several texts at once.\n"
        );
        let _ = write!(md, "| budget |");
        for (n, _) in &groups {
            let _ = write!(md, " {n} |");
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "|---|{}", "---|".repeat(groups.len()));
        for b in &budgets {
            let cells: Vec<Option<(&MeasuredPoint, &StudyInput)>> = groups
                .iter()
                .map(|(_, m)| m.iter().find(|s| s.budget == *b).map(|s| (&s.best, *s)))
                .collect();
            let best = cells
                .iter()
                .flatten()
                .min_by(|x, y| x.0.held_out_kl.total_cmp(&y.0.held_out_kl))
                .copied();
            let _ = write!(md, "| {b} |");
            for c in cells {
                let _ = match (c, best) {
                    (Some(m), Some(top)) if std::ptr::eq(m.0, top.0) => {
                        write!(
                            md,
                            " **{}** ({:.2}) |",
                            kl_cell(m.0),
                            m.0.held_out_perplexity
                        )
                    }
                    (Some(m), top) => {
                        let vs = top.and_then(|t| against(m, t));
                        write!(
                            md,
                            " {} ({:.2}){} |",
                            kl_cell(m.0),
                            m.0.held_out_perplexity,
                            vs.map_or(String::new(), |v| format!("; {v}"))
                        )
                    }
                    (None, _) => write!(md, " - |"),
                };
            }
            let _ = writeln!(md);
        }
    }
}

/// Held-out KL against tokens per variant, against the first variant.
fn anytime_table(md: &mut String, studies: &[StudyInput]) {
    let curves = anytime_curves(studies);
    if let Some(reference) = curves.first() {
        let _ = writeln!(
            md,
            "\n## Anytime: held-out KL of the best genome against tokens\n\n\
             Seeds are the studies named `<variant>-s<seed>`. The reference is the first \
             variant, {}: its mean final KL {:.4} after {:.0} tokens. \"To reach\" is the first \
             token count at which a variant's mean KL is at most that; \"at equal tokens\" \
             is its mean KL at the reference's final token count.\n",
            reference.variant, reference.final_kl, reference.final_tokens
        );
        let _ = writeln!(
            md,
            "| variant | seeds | final KL (mean) | lowest – highest | tokens | to reach the reference | % of its tokens | KL at equal tokens |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for c in &curves {
            let last = c
                .points
                .last()
                .copied()
                .unwrap_or((0.0, f64::NAN, f64::NAN, f64::NAN));
            let reach = c.tokens_to_reach(reference.final_kl);
            let _ = writeln!(
                md,
                "| {} | {} | {:.4} | {:.4} – {:.4} | {:.0} | {} | {} | {} |",
                c.variant,
                c.seeds,
                c.final_kl,
                last.2,
                last.3,
                c.final_tokens,
                reach.map_or("not reached".into(), |t| format!("{t:.0}")),
                reach.map_or("–".into(), |t| format!(
                    "{:.0}%",
                    100.0 * t / reference.final_tokens.max(1.0)
                )),
                c.at(reference.final_tokens)
                    .map_or("–".into(), |k| format!("{k:.4}")),
            );
        }
    }
}

/// NSGA-II's fronts, and each study's mean level per layer.
fn fronts_and_layers(md: &mut String, studies: &[StudyInput]) {
    for s in studies.iter().filter(|s| s.front.len() > 1) {
        let _ = writeln!(md, "\n## {}: front\n", s.name);
        let _ = writeln!(
            md,
            "| size | cost | held-out KL ± s.e. | held-out perplexity |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for m in &s.front {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} |",
                crate::user_cost(s, m),
                m.cost,
                kl_cell(m),
                m.held_out_perplexity
            );
        }
    }
    for s in studies {
        let layers = level_by_layer(s);
        if layers.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {}: mean level per layer\n", s.name);
        let row: Vec<String> = layers
            .iter()
            .map(|(l, v)| format!("L{l:02} {v:+.2}"))
            .collect();
        for chunk in row.chunks(10) {
            let _ = writeln!(md, "    {}", chunk.join("  "));
        }
    }
}

/// Write `report.md`, `report.html` (SVGs inlined) and `plots/*.{svg,png}` under `out`.
pub fn write_report(studies: &[StudyInput], out: &Path) -> Result<Vec<String>, ReportError> {
    if studies.is_empty() {
        return Err(ReportError::Empty("no study given".into()));
    }
    let plots_dir = out.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|e| ReportError::Draw {
        path: plots_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut names = Vec::new();
    let mut draw = |name: &str, p: Result<SeriesPlot, ReportError>| -> Result<(), ReportError> {
        match p {
            Ok(p) => {
                p.draw(&plots_dir.join(name))?;
                names.push(name.to_string());
                Ok(())
            }
            Err(ReportError::Empty(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    draw("front", front_plot(studies))?;
    draw("convergence-evaluations", convergence_plot(studies, false))?;
    draw("convergence-time", convergence_plot(studies, true))?;
    draw("hypervolume", hypervolume_plot(studies))?;
    draw("anytime", anytime_plot(studies))?;
    match profile_heatmap(studies) {
        Ok(h) => {
            h.draw(&plots_dir.join("profile"))?;
            names.push("profile".into());
        }
        Err(ReportError::Empty(_)) => {}
        Err(e) => return Err(e),
    }
    let md = markdown(studies, &names);
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| ReportError::Draw {
            path: p.display().to_string(),
            message: format!("{e} (is the disk full?)"),
        })
    };
    write(&out.join("report.md"), &md)?;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>evocomp report</title>\
         <style>body{font-family:sans-serif;max-width:960px;margin:auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>\n<pre>",
    );
    html.push_str(&md.replace('&', "&amp;").replace('<', "&lt;"));
    html.push_str("</pre>\n");
    for n in &names {
        let svg = std::fs::read_to_string(plots_dir.join(format!("{n}.svg"))).unwrap_or_default();
        html.push_str(&svg);
        html.push('\n');
    }
    html.push_str("</body></html>\n");
    write(&out.join("report.html"), &html)?;
    Ok(names)
}
