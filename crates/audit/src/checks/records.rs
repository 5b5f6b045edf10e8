//! `records`: every line of every data file satisfies the record contract (the trainer refuses a
//! file with one bad line), and every sampled record renders to a training answer.

use crate::context::Ctx;
use crate::data::DataFile;
use crate::encoding::Encoding;
use crate::report::{Check, Finding};

pub(crate) const NO_DATA: &str =
    "no data: `data.train` and `data.val` are not set in the config and --data was not given";

pub(crate) fn run(ctx: &Ctx<'_>, files: &[DataFile], encoding: Option<&Encoding>) -> Check {
    let c = Check::new(
        "records",
        "Record contract",
        "every line of each data file is a valid record (JSON, images, size, one geometry per object, all-pixel or all-bin coordinates inside the image) and every sampled record renders to a CoordJSON answer",
    );
    if files.is_empty() {
        return c.skip(NO_DATA);
    }
    let mut c = c;
    for f in files {
        let label = format!("{} `{}` ({})", f.role, f.path.display(), f.source);
        match &f.contents {
            Err(e) => {
                c.evidence.push(format!("{label}: cannot be read"));
                let mut finding = Finding::at(f.path.display().to_string(), e.what());
                if let Some(h) = e.hint_text() {
                    finding = finding.hint(h);
                }
                c.findings.push(finding);
            }
            Ok(contents) => {
                let r = &contents.report;
                c.evidence.push(format!(
                    "{label}: {} lines checked, {} valid records, {} with problems",
                    r.records(),
                    contents.valid,
                    r.records_with_issues()
                ));
                if let Some((n, key)) = f.limit {
                    c.evidence.push(format!(
                        "{}: the run uses the first {n} valid records ({} here); every line is still checked (the trainer reads the whole file)",
                        ctx.describe(key),
                        contents.images.len()
                    ));
                }
                for issue in r.issues() {
                    c.findings.push(
                        Finding::at(f.at(issue.line), issue.problem.describe())
                            .hint(issue.problem.hint.clone()),
                    );
                }
            }
        }
    }
    match encoding {
        Some(enc) => {
            c.evidence.push(format!(
                "answers rendered for {} sampled records (first {} valid records of each file)",
                enc.attempted, ctx.opts.sample_limit
            ));
            c.findings.extend(enc.record_errors.iter().cloned());
        }
        None => c.evidence.push(
            "answers not rendered: the sampled records are rendered while encoding, which needs the model directory".into(),
        ),
    }
    c.conclude(
        "every record is valid",
        |n| format!("{n} record problem(s)"),
        "fix or drop these records; `coordexp data validate FILE` lists every problem with its remedy",
    )
}
