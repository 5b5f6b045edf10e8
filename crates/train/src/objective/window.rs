//! Token counts of an accumulation window: the denominators of every loss term.
//!
//! Why the caller passes them: a loss that divides by its own micro-batch's counts and is then
//! averaged over micro-batches is a mean of means, which weighs a token of a short micro-batch
//! more than one of a long micro-batch. Dividing each micro-batch's *sum* by the whole window's
//! counts makes the accumulated gradient exactly that of one big batch, whatever the packing and
//! the split into micro-batches. Under data parallelism the counts are summed over ranks too.
//! (The reference divides per pack instead: `LossNorm::PerPackMean` reproduces it.)

use coordexp_text::TokenType;
use serde::Serialize;
use std::ops::{Add, AddAssign};

/// Supervised tokens per type in one optimizer step's worth of data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// CoordJSON structure tokens.
    #[serde(rename = "struct")]
    pub structure: u64,
    pub desc: u64,
    pub closure: u64,
    /// Coordinate slots (positions whose target is a coordinate token).
    pub coord: u64,
    /// Micro-batches (1 per micro-batch; the window's count is its accumulation steps). The
    /// reference's per-pack mean divides by it.
    pub micro_batches: u64,
}

impl WindowCounts {
    /// Counts of the supervised types in `types`; prompt and image tokens are not counted, so a
    /// packed row's full type vector can be passed as is.
    pub fn of(types: &[TokenType]) -> WindowCounts {
        let mut c = WindowCounts { micro_batches: 1, ..WindowCounts::default() };
        for t in types {
            match t {
                TokenType::Struct => c.structure += 1,
                TokenType::Desc => c.desc += 1,
                TokenType::Closure => c.closure += 1,
                TokenType::Coord => c.coord += 1,
                TokenType::Prompt | TokenType::Image => {}
            }
        }
        c
    }

    /// Supervised text (non-coordinate) tokens.
    pub fn text(&self) -> u64 {
        self.structure + self.desc + self.closure
    }

    /// All supervised tokens.
    pub fn supervised(&self) -> u64 {
        self.text() + self.coord
    }

    /// True when every count of `part` fits inside `self` (a micro-batch inside its window).
    pub(crate) fn covers(&self, part: &WindowCounts) -> bool {
        part.structure <= self.structure
            && part.desc <= self.desc
            && part.closure <= self.closure
            && part.coord <= self.coord
            && part.micro_batches <= self.micro_batches
    }
}

impl Add for WindowCounts {
    type Output = WindowCounts;
    fn add(mut self, rhs: WindowCounts) -> WindowCounts {
        self += rhs;
        self
    }
}

impl AddAssign for WindowCounts {
    fn add_assign(&mut self, rhs: WindowCounts) {
        self.structure += rhs.structure;
        self.desc += rhs.desc;
        self.closure += rhs.closure;
        self.coord += rhs.coord;
        self.micro_batches += rhs.micro_batches;
    }
}

impl std::iter::Sum for WindowCounts {
    fn sum<I: Iterator<Item = WindowCounts>>(iter: I) -> WindowCounts {
        iter.fold(WindowCounts::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenType::*;

    #[test]
    fn unsupervised_types_are_not_counted() {
        let c = WindowCounts::of(&[Prompt, Image, Struct, Desc, Desc, Coord, Closure]);
        assert_eq!(
            c,
            WindowCounts { structure: 1, desc: 2, closure: 1, coord: 1, micro_batches: 1 }
        );
        assert_eq!((c.text(), c.supervised()), (4, 5));
    }

    #[test]
    fn a_window_is_the_sum_of_its_micro_batches_and_covers_each() {
        let a = WindowCounts::of(&[Struct, Coord]);
        let b = WindowCounts::of(&[Desc, Coord, Coord]);
        let w: WindowCounts = [a, b].into_iter().sum();
        assert_eq!(
            w,
            WindowCounts { structure: 1, desc: 1, closure: 0, coord: 3, micro_batches: 2 }
        );
        assert!(w.covers(&a) && w.covers(&b));
        assert!(!a.covers(&w));
    }
}
