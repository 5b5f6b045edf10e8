//! `images`: every record the run uses has its image on disk, with exactly the record's size,
//! sides that are multiples of `template.image_factor`, and a pixel count within the budget
//! (`template.max_pixels` capped by the model's own limit) and above the model's minimum — so
//! nothing would be resized. Every record is checked (headers only, in parallel).

use crate::checks::records::NO_DATA;
use crate::context::Ctx;
use crate::data::DataFile;
use crate::encoding::ModelState;
use crate::report::{Check, Finding};
use coordexp_core::progress::Progress;
use coordexp_core::record::{Reason, ValidationReport};
use coordexp_data::images::{SIDE_MULTIPLE, check_images};

/// Records per parallel batch (a progress line may follow each).
const CHUNK: usize = 4096;

pub(crate) fn run(ctx: &Ctx<'_>, files: &[DataFile], model: &ModelState) -> Check {
    let c = Check::new(
        "images",
        "Images",
        "every record's image exists, its true size equals the record's, both sides are multiples of template.image_factor, and its pixels lie within the budget (template.max_pixels capped by the model's limit) and above the model's minimum: nothing would be resized",
    );
    if files.is_empty() {
        return c.skip(NO_DATA);
    }
    let mut c = c;
    c.settings = ctx.settings(&["template.max_pixels", "template.image_factor"]);
    let t = &ctx.cfg.template;
    let (max_pixels, min_pixels) = match model.encoder() {
        Some(enc) => {
            let v = enc.model().vision();
            c.evidence.push(format!(
                "pixel budget {} = min(template.max_pixels {}, the model's max_pixels {} from its image-processor config); the model's min_pixels {}",
                t.max_pixels.min(v.max_pixels),
                t.max_pixels,
                v.max_pixels,
                v.min_pixels
            ));
            (t.max_pixels.min(v.max_pixels), Some(v.min_pixels))
        }
        None => {
            c.evidence.push(format!(
                "pixel budget {} = template.max_pixels; the model's own limits are unknown ({})",
                t.max_pixels,
                model.unavailable().unwrap_or_default()
            ));
            (t.max_pixels, None)
        }
    };
    let factor = t.image_factor.max(1);
    for f in files {
        let Ok(contents) = &f.contents else {
            c.evidence.push(format!(
                "{} `{}`: not checked, the file cannot be read (see the records check)",
                f.role,
                f.path.display()
            ));
            continue;
        };
        ctx.progress.note(&format!("checking {} images of {}", contents.images.len(), f.role));
        let mut report = ValidationReport::new(&f.path);
        let mut opened = 0;
        for (k, chunk) in contents.images.chunks(CHUNK).enumerate() {
            opened += check_images(&mut report, chunk, max_pixels, Progress::OFF);
            let done = ((k + 1) * CHUNK).min(contents.images.len());
            ctx.progress.tick("records' images checked", done, contents.images.len());
        }
        let mut findings: Vec<(usize, Finding)> = report
            .issues()
            .iter()
            // The data crate's grid rule is 32; another factor is checked below.
            .filter(|i| factor == SIDE_MULTIPLE || i.problem.reason != Reason::NotMultipleOf32)
            .map(|i| {
                (
                    i.line,
                    Finding::at(f.at(i.line), i.problem.describe()).hint(i.problem.hint.clone()),
                )
            })
            .collect();
        for r in &contents.images {
            let (w, h) = (r.size.width(), r.size.height());
            if factor != SIDE_MULTIPLE {
                for (field, side) in [("width", w), ("height", h)] {
                    if side % factor != 0 {
                        findings.push((r.line, Finding::at(
                            f.at(r.line),
                            format!("{field}: {side} is not a multiple of template.image_factor {factor}"),
                        )
                        .hint(format!("resize offline with `coordexp data resize --factor {factor}`"))));
                    }
                }
            }
            if let Some(min) = min_pixels
                && r.size.pixels() < min
            {
                findings.push((
                    r.line,
                    Finding::at(
                        f.at(r.line),
                        format!(
                            "width: {w}x{h} = {} pixels is below the model's min_pixels {min}: its image processor would upscale it",
                            r.size.pixels()
                        ),
                    )
                    .hint("resize offline with `coordexp data resize` (it rescales the geometry too)"),
                ));
            }
        }
        findings.sort_by_key(|(line, _)| *line);
        let lines: std::collections::BTreeSet<usize> = findings.iter().map(|(l, _)| *l).collect();
        let scope = match f.limit {
            Some((n, key)) => format!("the first {n} valid records ({key})"),
            None => "every valid record".into(),
        };
        c.evidence.push(format!(
            "{} `{}`: {} records checked ({scope}), {opened} image files opened, {} records with problems",
            f.role,
            f.path.display(),
            contents.images.len(),
            lines.len()
        ));
        c.findings.extend(findings.into_iter().map(|(_, f)| f));
    }
    c.conclude(
        "every image exists with its record's size, on the grid and within the pixel budget",
        |n| format!("{n} image problem(s)"),
        "images are never resized at training time: resize offline with `coordexp data resize` (it rescales the geometry too), or fix the records' width/height to the files' true sizes",
    )
}
