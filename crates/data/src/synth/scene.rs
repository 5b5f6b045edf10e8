//! Layout and rasterisation of one synthetic image.
//!
//! Shapes are filled without anti-aliasing: a pixel belongs to a shape when its centre
//! `(x + 0.5, y + 0.5)` lies inside it. Each object's box is the tight box of its own pixels in
//! edge coordinates (`x2 = last column + 1`), so boxes are exact by construction, whatever the
//! shape. Later shapes are painted over earlier ones, but a placement is only accepted when every
//! earlier object keeps at least [`MIN_VISIBLE`] of its pixels *and* its visible pixels still span
//! its whole box: the label is then the same whether one reads boxes as amodal or as visible
//! extent. Two shapes of the same colour never touch, so no two objects merge into one blob.

use super::rng::{SplitMix64, mix, range_u32};

/// Image sides, in pixels (multiples of 32, so the images need no resizing for the model).
pub(crate) const SIDES: [u32; 3] = [128, 192, 256];
/// Fewest and most objects an image is asked for.
pub(crate) const MIN_OBJECTS: u32 = 1;
pub(crate) const MAX_OBJECTS: u32 = 6;
/// Share of an earlier object's pixels that must stay visible after later shapes are painted.
const MIN_VISIBLE: f64 = 0.6;
/// Placement attempts per object before giving up on it (the miss is counted by the caller).
const ATTEMPTS: u32 = 40;

/// The four shapes. Circles and squares have square boxes; triangles and diamonds are stretched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl Shape {
    const ALL: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
        }
    }

    /// Is the point `(px, py)` inside this shape drawn in the `w × h` frame at the origin?
    fn contains(self, px: f64, py: f64, w: f64, h: f64) -> bool {
        match self {
            Shape::Square => true,
            Shape::Circle => {
                let (dx, dy) = (px - w / 2.0, py - h / 2.0);
                dx * dx + dy * dy <= w * w / 4.0
            }
            // Apex at the top centre, base along the bottom edge.
            Shape::Triangle => {
                let half_width_at = (py / h) * w / 2.0;
                (px - w / 2.0).abs() <= half_width_at
            }
            Shape::Diamond => {
                (px - w / 2.0).abs() / (w / 2.0) + (py - h / 2.0).abs() / (h / 2.0) <= 1.0
            }
        }
    }
}

/// Four well-separated, saturated colours, far from the light background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
}

impl Colour {
    const ALL: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
        }
    }

    fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [210, 40, 40],
            Colour::Green => [40, 160, 60],
            Colour::Blue => [40, 80, 210],
            Colour::Yellow => [230, 190, 30],
        }
    }
}

/// One placed object: what it is and its exact pixel box `[x1, y1, x2, y2]` (edge coordinates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) shape: Shape,
    pub(crate) colour: Colour,
    pub(crate) bbox: [u32; 4],
}

/// A finished scene: its size, its objects in painting order, its pixels and how many requested
/// objects found no valid place.
pub(crate) struct Scene {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) objects: Vec<Placed>,
    pub(crate) pixels: Vec<u8>,
    pub(crate) not_placed: u32,
}

/// Draw the scene of one image from its own seed (see [`super::rng`] for the derivation).
#[cfg(test)]
pub(crate) fn draw(image_seed: u64) -> Scene {
    draw_with(image_seed, &SIDES, MIN_OBJECTS, MAX_OBJECTS)
}

/// [`draw`] with other image sides and object counts (with the defaults it draws the same scene).
pub(crate) fn draw_with(
    image_seed: u64,
    sides: &[u32],
    min_objects: u32,
    max_objects: u32,
) -> Scene {
    let mut rng = SplitMix64::new(image_seed);
    let width = sides[rng.below(sides.len() as u64) as usize];
    let height = sides[rng.below(sides.len() as u64) as usize];
    let wanted = range_u32(&mut rng, min_objects, max_objects);

    // Object label per pixel (index + 1), 0 for background.
    let mut owner = vec![0u8; (width * height) as usize];
    let mut placed: Vec<(Placed, u32)> = Vec::new(); // object and its own pixel count
    let mut not_placed = 0;
    for _ in 0..wanted {
        let label = placed.len() as u8 + 1;
        match (0..ATTEMPTS).find_map(|_| try_place(&mut rng, width, height, &owner, &placed)) {
            Some(candidate) => {
                candidate.paint_label(&mut owner, width, label);
                placed.push((candidate.object, candidate.area));
            }
            None => not_placed += 1,
        }
    }

    let pixels = paint(&mut rng, image_seed, width, height, &owner, &placed);
    let objects: Vec<Placed> = placed.into_iter().map(|(o, _)| o).collect();
    Scene { width, height, objects, pixels, not_placed }
}

/// A shape rasterised in its `w × h` frame at `(x0, y0)`, not yet painted.
struct Candidate {
    object: Placed,
    area: u32,
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
    mask: Vec<bool>,
}

impl Candidate {
    fn covers(&self, x: u32, y: u32) -> bool {
        let (dx, dy) = (x.wrapping_sub(self.x0), y.wrapping_sub(self.y0));
        dx < self.w && dy < self.h && self.mask[(dy * self.w + dx) as usize]
    }

    fn paint_label(&self, owner: &mut [u8], width: u32, label: u8) {
        for dy in 0..self.h {
            for dx in 0..self.w {
                if self.mask[(dy * self.w + dx) as usize] {
                    owner[((self.y0 + dy) * width + self.x0 + dx) as usize] = label;
                }
            }
        }
    }
}

/// One placement attempt: a random shape, colour, size and position, accepted only if it keeps
/// every earlier object visible and unmerged.
fn try_place(
    rng: &mut SplitMix64,
    width: u32,
    height: u32,
    owner: &[u8],
    placed: &[(Placed, u32)],
) -> Option<Candidate> {
    let shape = Shape::ALL[rng.below(4) as usize];
    let colour = Colour::ALL[rng.below(4) as usize];
    let short = width.min(height) as f64;
    let side = (short * (0.12 + 0.33 * rng.unit())).round() as u32;
    let (w, h) = match shape {
        Shape::Circle | Shape::Square => (side, side),
        Shape::Triangle | Shape::Diamond => {
            let stretch = 0.75 + 0.6 * rng.unit();
            (side, ((side as f64 * stretch).round() as u32).clamp(8, height))
        }
    };
    let x0 = range_u32(rng, 0, width - w);
    let y0 = range_u32(rng, 0, height - h);

    let mut mask = vec![false; (w * h) as usize];
    let (mut bx1, mut by1, mut bx2, mut by2) = (u32::MAX, u32::MAX, 0, 0);
    let mut area = 0u32;
    for dy in 0..h {
        for dx in 0..w {
            if shape.contains(dx as f64 + 0.5, dy as f64 + 0.5, w as f64, h as f64) {
                mask[(dy * w + dx) as usize] = true;
                let (x, y) = (x0 + dx, y0 + dy);
                area += 1;
                (bx1, by1, bx2, by2) = (bx1.min(x), by1.min(y), bx2.max(x + 1), by2.max(y + 1));
            }
        }
    }
    if area == 0 {
        return None;
    }
    let object = Placed { shape, colour, bbox: [bx1, by1, bx2, by2] };
    let same_colour_touches =
        placed.iter().any(|(p, _)| p.colour == colour && boxes_touch(&p.bbox, &object.bbox));
    let candidate = Candidate { object, area, x0, y0, w, h, mask };
    if same_colour_touches || !earlier_objects_stay_visible(owner, width, placed, &candidate) {
        return None;
    }
    Some(candidate)
}

/// Do two boxes overlap or share an edge (one pixel of clearance is required)?
fn boxes_touch(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3]
}

/// With `candidate` painted on top, every earlier object keeps [`MIN_VISIBLE`] of its pixels and
/// its visible pixels still span its box. Only objects whose box overlaps the candidate's can
/// change, so only those are scanned.
fn earlier_objects_stay_visible(
    owner: &[u8],
    width: u32,
    placed: &[(Placed, u32)],
    candidate: &Candidate,
) -> bool {
    let c = &candidate.object.bbox;
    placed.iter().enumerate().all(|(i, (object, area))| {
        let [x1, y1, x2, y2] = object.bbox;
        if !(x1 < c[2] && c[0] < x2 && y1 < c[3] && c[1] < y2) {
            return true;
        }
        let label = i as u8 + 1;
        let (mut vx1, mut vy1, mut vx2, mut vy2) = (u32::MAX, u32::MAX, 0, 0);
        let mut visible = 0u32;
        for y in y1..y2 {
            for x in x1..x2 {
                if owner[(y * width + x) as usize] == label && !candidate.covers(x, y) {
                    visible += 1;
                    (vx1, vy1, vx2, vy2) = (vx1.min(x), vy1.min(y), vx2.max(x + 1), vy2.max(y + 1));
                }
            }
        }
        f64::from(visible) >= MIN_VISIBLE * f64::from(*area) && [vx1, vy1, vx2, vy2] == object.bbox
    })
}

/// Side of the background's mottling cells, in pixels.
const CELL: u32 = 16;

/// RGB pixels. The background is a light base colour with a gentle linear gradient and faint
/// mottling in 16×16 cells — texture enough that "background" is not one flat colour, smooth
/// enough that the PNGs stay small. Each object pixel has its object's flat colour. The
/// gradient and mottling are tabulated per column, row and cell, so the per-pixel work is a few
/// integer additions.
fn paint(
    rng: &mut SplitMix64,
    image_seed: u64,
    width: u32,
    height: u32,
    owner: &[u8],
    placed: &[(Placed, u32)],
) -> Vec<u8> {
    let base = [range_u32(rng, 215, 240), range_u32(rng, 215, 240), range_u32(rng, 215, 240)]
        .map(|b| b as i32);
    let (gx, gy) = (20.0 * rng.unit() - 10.0, 20.0 * rng.unit() - 10.0);
    let ramp = |g: f64, n: u32| -> Vec<i32> {
        (0..n).map(|i| (g * (f64::from(i) / f64::from(n) - 0.5)) as i32).collect()
    };
    let (ramp_x, ramp_y) = (ramp(gx, width), ramp(gy, height));
    let noise_seed = mix(image_seed ^ 0x006E_6F69_7365); // "noise"
    let cells_x = width.div_ceil(CELL);
    let mottle: Vec<[i32; 3]> = (0..cells_x * height.div_ceil(CELL))
        .map(|k| {
            let n = mix(noise_seed ^ u64::from(k));
            [0, 1, 2].map(|c| ((n >> (8 * c)) & 7) as i32 - 3)
        })
        .collect();
    let colours: Vec<[u8; 3]> = placed.iter().map(|(p, _)| p.colour.rgb()).collect();
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        let row = &owner[(y * width) as usize..((y + 1) * width) as usize];
        for (x, &label) in (0..width).zip(row) {
            if label == 0 {
                let m = mottle[((y / CELL) * cells_x + x / CELL) as usize];
                for c in 0..3 {
                    let v = base[c] + ramp_x[x as usize] + ramp_y[y as usize] + m[c];
                    pixels.push(v.clamp(0, 255) as u8);
                }
            } else {
                pixels.extend_from_slice(&colours[usize::from(label) - 1]);
            }
        }
    }
    pixels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recompute each object's tight box from the painted colours alone.
    fn visible_box(scene: &Scene, object: &Placed) -> [u32; 4] {
        let rgb = object.colour.rgb();
        let [x1, y1, x2, y2] = object.bbox;
        let (mut b, w) = ([u32::MAX, u32::MAX, 0, 0], scene.width);
        for y in y1..y2 {
            for x in x1..x2 {
                let i = ((y * w + x) * 3) as usize;
                if scene.pixels[i..i + 3] == rgb {
                    b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
                }
            }
        }
        b
    }

    #[test]
    fn boxes_are_the_tight_extent_of_the_painted_pixels() {
        for seed in 0..200 {
            let scene = draw(mix(seed));
            for object in &scene.objects {
                assert_eq!(visible_box(&scene, object), object.bbox, "seed {seed} {object:?}");
            }
        }
    }

    #[test]
    fn scenes_have_bounded_object_counts_and_allowed_sizes() {
        for seed in 0..200 {
            let scene = draw(mix(seed));
            let n = scene.objects.len() as u32 + scene.not_placed;
            assert!((MIN_OBJECTS..=MAX_OBJECTS).contains(&n));
            assert!(!scene.objects.is_empty());
            assert!(SIDES.contains(&scene.width) && SIDES.contains(&scene.height));
            assert_eq!(scene.pixels.len(), (scene.width * scene.height * 3) as usize);
            for o in &scene.objects {
                assert!(o.bbox[0] < o.bbox[2] && o.bbox[2] <= scene.width);
                assert!(o.bbox[1] < o.bbox[3] && o.bbox[3] <= scene.height);
            }
        }
    }

    #[test]
    fn same_seed_draws_the_same_scene() {
        let (a, b) = (draw(42), draw(42));
        assert_eq!(a.objects, b.objects);
        assert_eq!(a.pixels, b.pixels);
    }

    #[test]
    fn circle_and_square_boxes_are_square() {
        for seed in 0..100 {
            for o in draw(mix(seed)).objects {
                if matches!(o.shape, Shape::Circle | Shape::Square) {
                    assert_eq!(o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1], "{o:?}");
                }
            }
        }
    }
}
