//! The synthetic shapes dataset: the project's embedded default data.
//!
//! Each image is 128, 192 or 256 pixels on a side (independently for width and height) and holds
//! one to six filled shapes — circle, square, triangle, diamond — in red, green, blue or yellow on
//! a light, lightly textured background (a gentle gradient and faint mottling). Descriptions are
//! `"<colour> <shape>"` (`"red circle"`), boxes are exact pixel boxes in edge coordinates and
//! objects are listed in the canonical top-left order (by `(y1, x1)`). Small enough for a tiny
//! model to learn on a CPU in minutes, but with overlaps, stretched shapes and several sizes so
//! that it is not trivial. Images are about 7 KB each.
//!
//! A seed fixes the whole dataset; see [`rng`] for how each image's seed is derived.

mod rng;
mod scene;

use crate::order::sort_canonical;
use crate::write::{write_atomically, write_json};
use coordexp_core::Error;
use coordexp_core::geometry::ImageSize;
use coordexp_core::progress::Progress;
use coordexp_core::record::{Desc, Geometry, Object, Objects, Record};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Map;
use std::fs;
use std::path::{Path, PathBuf};

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Output directory; created if missing, and it must be empty if it exists.
    pub out: PathBuf,
    /// Number of training images.
    pub train: usize,
    /// Number of validation images.
    pub val: usize,
    /// The dataset seed.
    pub seed: u64,
    /// Progress over the images of each split.
    pub progress: Progress,
}

/// What the scenes look like: image sides and objects per image. The default is the dataset
/// described in the module docs; `coordexp demo` asks for smaller, sparser scenes to fit its
/// CPU budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneSpec {
    /// Each image's width and height are drawn from these (multiples of 32).
    pub sides: Vec<u32>,
    pub min_objects: u32,
    pub max_objects: u32,
}

impl Default for SceneSpec {
    fn default() -> Self {
        SceneSpec {
            sides: scene::SIDES.to_vec(),
            min_objects: scene::MIN_OBJECTS,
            max_objects: scene::MAX_OBJECTS,
        }
    }
}

impl SceneSpec {
    fn check(&self) -> Result<(), Error> {
        let bad_side = self.sides.iter().find(|&&s| s == 0 || s % 32 != 0 || s > 4096);
        if self.sides.is_empty() || bad_side.is_some() {
            return Err(Error::input(format!(
                "image sides {:?} are not multiples of 32 in 32..=4096",
                self.sides
            ))
            .hint("give at least one side, e.g. 128"));
        }
        if !(1..=self.max_objects).contains(&self.min_objects) || self.max_objects > 250 {
            return Err(Error::input(format!(
                "objects per image {}..={} must satisfy 1 <= min <= max <= 250",
                self.min_objects, self.max_objects
            )));
        }
        Ok(())
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    pub seed: u64,
    pub train: SplitSummary,
    pub val: SplitSummary,
}

/// One split's output file and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitSummary {
    /// The split's JSONL file.
    pub jsonl: PathBuf,
    /// Images (= records) written.
    pub images: usize,
    /// Objects written.
    pub objects: usize,
    /// Objects a scene asked for but could not place without hiding an earlier one or merging
    /// two shapes of one colour; such a scene simply has fewer objects.
    pub objects_not_placed: usize,
}

/// The two splits, each with the salt of its seed derivation (its ASCII name as a number).
#[derive(Debug, Clone, Copy)]
enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    fn salt(self) -> u64 {
        self.name().bytes().fold(0u64, |acc, b| (acc << 8) | u64::from(b))
    }
}

/// Generate the dataset: `OUT/images/{train,val}/NNNNNN.png`, `OUT/train.jsonl`, `OUT/val.jsonl`
/// (image paths relative to `OUT`) and `OUT/synth.json` (this summary). Images are drawn and
/// encoded in parallel; the output is identical for a given seed whatever the thread count.
pub fn generate(opts: &SynthOptions) -> Result<SynthSummary, Error> {
    generate_with(opts, &SceneSpec::default())
}

/// [`generate`] with other scenes.
pub fn generate_with(opts: &SynthOptions, spec: &SceneSpec) -> Result<SynthSummary, Error> {
    spec.check()?;
    if opts.train + opts.val == 0 {
        return Err(Error::input("nothing to generate: --train and --val are both 0")
            .hint("ask for at least one image, e.g. --train 1000 --val 100"));
    }
    prepare_out_dir(&opts.out)?;
    let train = write_split(opts, spec, Split::Train, opts.train)?;
    let val = write_split(opts, spec, Split::Val, opts.val)?;
    let summary = SynthSummary { seed: opts.seed, train, val };
    write_json(&opts.out.join("synth.json"), &summary)?;
    Ok(summary)
}

/// Create `out` (and its parents); refuse a non-empty directory so that a smaller run never
/// leaves stale images from a larger one behind.
fn prepare_out_dir(out: &Path) -> Result<(), Error> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::input(format!(
                    "output directory {} is not empty",
                    out.display()
                ))
                .hint("synth writes a fresh dataset: pass a new --out or remove the directory"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(|e| Error::io("create directory", out, &e))
        }
        Err(e) => Err(Error::io("read directory", out, &e)),
    }
}

fn write_split(
    opts: &SynthOptions,
    spec: &SceneSpec,
    split: Split,
    count: usize,
) -> Result<SplitSummary, Error> {
    let image_dir = opts.out.join("images").join(split.name());
    fs::create_dir_all(&image_dir).map_err(|e| Error::io("create directory", &image_dir, &e))?;
    let task = opts.progress.task(&format!("synth {}", split.name()), Some(count as u64), "images");
    let lines: Vec<(String, usize, usize)> = (0..count)
        .into_par_iter()
        .map(|index| {
            task.inc(1);
            let scene = scene::draw_with(
                rng::image_seed(opts.seed, split.salt(), index as u64),
                &spec.sides,
                spec.min_objects,
                spec.max_objects,
            );
            let file = format!("{index:06}.png");
            let path = image_dir.join(&file);
            image::save_buffer(
                &path,
                &scene.pixels,
                scene.width,
                scene.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| Error::runtime(format!("cannot write {}: {e}", path.display())))?;
            let record = to_record(&scene, format!("images/{}/{file}", split.name()))?;
            let json = record.to_json_line();
            Ok((json, scene.objects.len(), scene.not_placed as usize))
        })
        .collect::<Result<_, Error>>()?;
    task.finish();

    let jsonl = opts.out.join(format!("{}.jsonl", split.name()));
    let mut text = String::with_capacity(lines.iter().map(|(l, _, _)| l.len() + 1).sum());
    for (line, _, _) in &lines {
        text.push_str(line);
        text.push('\n');
    }
    write_atomically(&jsonl, text.as_bytes())?;
    Ok(SplitSummary {
        jsonl,
        images: count,
        objects: lines.iter().map(|(_, n, _)| n).sum(),
        objects_not_placed: lines.iter().map(|(_, _, m)| m).sum(),
    })
}

/// The scene as a validated pixel record, objects in canonical order.
fn to_record(scene: &scene::Scene, image: String) -> Result<Record, Error> {
    let bug = |what: String| Error::runtime(format!("synth produced an invalid record: {what}"));
    let mut objects = scene
        .objects
        .iter()
        .map(|o| {
            let desc = Desc::new(&format!("{} {}", o.colour.name(), o.shape.name()))
                .map_err(|e| bug(e.to_string()))?;
            Ok(Object::new(desc, Geometry::BBox(o.bbox.map(f64::from))))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    sort_canonical(&mut objects);
    let size =
        ImageSize::new(scene.width, scene.height).ok_or_else(|| bug("empty image".into()))?;
    Record::new(vec![image], size, Objects::Pixels(objects), Map::new()).map_err(|problems| {
        bug(problems.iter().map(|p| p.describe()).collect::<Vec<_>>().join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(out: &Path, seed: u64) -> SynthOptions {
        SynthOptions { out: out.to_path_buf(), train: 6, val: 3, seed, progress: Progress::OFF }
    }

    #[test]
    fn a_seed_fixes_every_byte_of_the_dataset() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(&opts(&a.path().join("d"), 5)).unwrap();
        generate(&opts(&b.path().join("d"), 5)).unwrap();
        for rel in ["train.jsonl", "val.jsonl", "images/train/000005.png", "images/val/000002.png"]
        {
            let (x, y) = (a.path().join("d").join(rel), b.path().join("d").join(rel));
            assert_eq!(fs::read(x).unwrap(), fs::read(y).unwrap(), "{rel}");
        }
        assert_eq!((sa.train.images, sa.val.images), (6, 3));
    }

    #[test]
    fn different_seeds_give_different_datasets() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&opts(a.path(), 1)).unwrap();
        generate(&opts(b.path(), 2)).unwrap();
        let read = |d: &Path| fs::read_to_string(d.join("train.jsonl")).unwrap();
        assert_ne!(read(a.path()), read(b.path()));
    }

    #[test]
    fn records_point_at_relative_pngs_of_the_recorded_size() {
        let dir = tempfile::tempdir().unwrap();
        generate(&opts(dir.path(), 9)).unwrap();
        let text = fs::read_to_string(dir.path().join("val.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let rel = v["images"][0].as_str().unwrap();
            assert!(rel.starts_with("images/val/"), "{rel}");
            let (w, h) = image::image_dimensions(dir.path().join(rel)).unwrap();
            assert_eq!(
                (u64::from(w), u64::from(h)),
                (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
            );
            let desc = v["objects"][0]["desc"].as_str().unwrap();
            assert_eq!(desc.split(' ').count(), 2, "{desc}");
        }
    }

    #[test]
    fn records_are_valid_and_objects_are_in_canonical_order() {
        let dir = tempfile::tempdir().unwrap();
        generate(&SynthOptions {
            out: dir.path().into(),
            train: 40,
            val: 0,
            seed: 3,
            progress: Progress::OFF,
        })
        .unwrap();
        let records = coordexp_core::record::read_records(&dir.path().join("train.jsonl")).unwrap();
        assert_eq!(records.len(), 40);
        for (line, r) in records {
            let Objects::Pixels(objects) = r.objects() else { panic!("line {line}: no objects") };
            let anchors: Vec<_> =
                objects.iter().map(|o| crate::order::anchor(&o.geometry)).collect();
            assert!(anchors.windows(2).all(|w| w[0] <= w[1]), "line {line}: {anchors:?}");
        }
    }

    #[test]
    fn a_non_empty_output_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("stale.txt"), "x").unwrap();
        let err = generate(&opts(dir.path(), 1)).unwrap_err();
        assert!(err.what().contains("not empty"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn split_salts_are_distinct() {
        assert_ne!(Split::Train.salt(), Split::Val.salt());
    }
}
