//! Rectangular linear sum assignment (the "Hungarian" problem) on `f64` costs.
//!
//! Evaluation (F1 at IoU thresholds) and stage-2 matching both need a one-to-one pairing of
//! predictions with ground truth that optimises a total score. This module owns that solver so
//! there is exactly one in the workspace.
//!
//! The algorithm is the shortest-augmenting-path method (Crouse, 2016) that
//! `scipy.optimize.linear_sum_assignment` uses: rows are added one at a time, each through a
//! Dijkstra search over reduced costs kept non-negative by dual potentials. We also reproduce
//! scipy's scan order (columns visited from the last to the first, a finished column swapped out
//! of the to-do list) and its tie rule (among equally short paths, prefer one that ends at a free
//! column). The result is therefore not only optimal but *the same* pairing scipy returns, even
//! when several pairings are optimal; that makes the solver deterministic and lets the oracle test
//! compare assignments, not just totals.
//!
//! Invalid inputs cannot reach the solver: a [`CostMatrix`] can only be built from finite costs no
//! larger than [`MAX_ABS_COST`] in magnitude, which keeps every dual potential finite, so
//! [`solve`] always returns a complete assignment of `min(rows, cols)` pairs.

use crate::{Error, Result};

/// Largest accepted cost magnitude. Dual potentials are sums of at most `rows + cols` costs, so
/// this bound keeps every intermediate value finite with room to spare.
pub const MAX_ABS_COST: f64 = 1e100;

/// A dense, row-major cost matrix whose entries are all finite and bounded by [`MAX_ABS_COST`].
#[derive(Debug, Clone, PartialEq)]
pub struct CostMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl CostMatrix {
    /// Wrap `data` (row-major, `rows * cols` entries) after checking its length and values.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        let expected = rows.checked_mul(cols).ok_or_else(|| {
            Error::input(format!("cost matrix shape {rows}x{cols} overflows usize"))
        })?;
        if data.len() != expected {
            return Err(Error::input(format!(
                "cost matrix {rows}x{cols} needs {expected} entries, got {}",
                data.len()
            )));
        }
        if let Some(k) = data.iter().position(|c| !c.is_finite() || c.abs() > MAX_ABS_COST) {
            return Err(Error::input(format!(
                "cost matrix entry ({}, {}) is {}; costs must be finite with magnitude <= {MAX_ABS_COST:e}",
                k / cols,
                k % cols,
                data[k]
            ))
            .hint("replace forbidden pairs by a large finite cost (or 0 when maximising)"));
        }
        Ok(CostMatrix { rows, cols, data })
    }

    /// Build the matrix from `cost(row, col)`.
    pub fn from_fn(
        rows: usize,
        cols: usize,
        mut cost: impl FnMut(usize, usize) -> f64,
    ) -> Result<Self> {
        let mut data = Vec::with_capacity(rows.saturating_mul(cols));
        for r in 0..rows {
            for c in 0..cols {
                data.push(cost(r, c));
            }
        }
        CostMatrix::new(rows, cols, data)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The cost at (`row`, `col`); `None` outside the matrix.
    pub fn get(&self, row: usize, col: usize) -> Option<f64> {
        (row < self.rows && col < self.cols).then(|| self.data[row * self.cols + col])
    }
}

/// Whether the total cost is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Minimize,
    Maximize,
}

/// An optimal one-to-one pairing: `min(rows, cols)` `(row, col)` pairs, sorted by row, with no
/// row or column used twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pairs: Vec<(usize, usize)>,
}

impl Assignment {
    /// The `(row, col)` pairs, ascending by row (the layout scipy returns).
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The sum of the assigned costs, added in row order.
    pub fn total(&self, costs: &CostMatrix) -> f64 {
        self.pairs.iter().map(|&(r, c)| costs.data[r * costs.cols + c]).sum()
    }
}

/// Marks "no row" / "no column" in the solver's index arrays.
const FREE: usize = usize::MAX;

/// Solve the assignment problem for `costs` toward `goal`.
pub fn solve(costs: &CostMatrix, goal: Goal) -> Assignment {
    if costs.rows == 0 || costs.cols == 0 {
        return Assignment { pairs: Vec::new() };
    }
    // The search adds one row at a time and needs rows <= cols, so a tall matrix is transposed;
    // maximisation is minimisation of the negated costs.
    let transposed = costs.rows > costs.cols;
    let (n, m) = if transposed { (costs.cols, costs.rows) } else { (costs.rows, costs.cols) };
    let sign = match goal {
        Goal::Minimize => 1.0,
        Goal::Maximize => -1.0,
    };
    let work: Vec<f64> = if transposed {
        (0..n)
            .flat_map(|i| (0..m).map(move |j| (i, j)))
            .map(|(i, j)| sign * costs.data[j * costs.cols + i])
            .collect()
    } else {
        costs.data.iter().map(|c| sign * c).collect()
    };

    let col_of_row = ShortestPaths::new(&work, n, m).run();

    let mut pairs: Vec<(usize, usize)> = if transposed {
        col_of_row.iter().enumerate().map(|(i, &j)| (j, i)).collect()
    } else {
        col_of_row.iter().enumerate().map(|(i, &j)| (i, j)).collect()
    };
    pairs.sort_unstable();
    Assignment { pairs }
}

/// State of the shortest-augmenting-path search on an `n x m` working matrix with `n <= m`.
struct ShortestPaths<'a> {
    cost: &'a [f64],
    n: usize,
    m: usize,
    /// Dual potentials of rows and columns; reduced costs `cost - u - v` stay non-negative.
    u: Vec<f64>,
    v: Vec<f64>,
    col_of_row: Vec<usize>,
    row_of_col: Vec<usize>,
    /// Per search: tentative path length to each column and the row it was reached from.
    dist: Vec<f64>,
    via_row: Vec<usize>,
    row_seen: Vec<bool>,
    col_done: Vec<bool>,
    /// Columns whose distance is not final yet, in scipy's scan order.
    todo: Vec<usize>,
}

impl<'a> ShortestPaths<'a> {
    fn new(cost: &'a [f64], n: usize, m: usize) -> Self {
        ShortestPaths {
            cost,
            n,
            m,
            u: vec![0.0; n],
            v: vec![0.0; m],
            col_of_row: vec![FREE; n],
            row_of_col: vec![FREE; m],
            dist: vec![f64::INFINITY; m],
            via_row: vec![FREE; m],
            row_seen: vec![false; n],
            col_done: vec![false; m],
            todo: Vec::with_capacity(m),
        }
    }

    /// Assign every row; returns the column of each row.
    fn run(mut self) -> Vec<usize> {
        for start in 0..self.n {
            let (sink, length) = self.search(start);
            self.update_duals(start, length);
            self.augment(start, sink);
        }
        self.col_of_row
    }

    /// Dijkstra from row `start` to the nearest free column; returns that column and the path
    /// length. A free column always exists (fewer than `n <= m` columns are assigned), and all
    /// distances are finite (bounded costs), so the scan always picks a column.
    fn search(&mut self, start: usize) -> (usize, f64) {
        self.dist.fill(f64::INFINITY);
        self.row_seen.fill(false);
        self.col_done.fill(false);
        self.todo.clear();
        self.todo.extend((0..self.m).rev());

        let mut length = 0.0;
        let mut row = start;
        loop {
            self.row_seen[row] = true;
            let mut best = f64::INFINITY;
            let mut best_at = 0;
            for (k, &j) in self.todo.iter().enumerate() {
                let d = length + self.cost[row * self.m + j] - self.u[row] - self.v[j];
                if d < self.dist[j] {
                    self.dist[j] = d;
                    self.via_row[j] = row;
                }
                // Strictly shorter wins; on a tie, a free column wins (it ends the search).
                if self.dist[j] < best || (self.dist[j] == best && self.row_of_col[j] == FREE) {
                    best = self.dist[j];
                    best_at = k;
                }
            }
            length = best;
            let col = self.todo.swap_remove(best_at);
            self.col_done[col] = true;
            match self.row_of_col[col] {
                FREE => return (col, length),
                next => row = next,
            }
        }
    }

    fn update_duals(&mut self, start: usize, length: f64) {
        self.u[start] += length;
        for r in 0..self.n {
            if self.row_seen[r] && r != start {
                self.u[r] += length - self.dist[self.col_of_row[r]];
            }
        }
        for c in 0..self.m {
            if self.col_done[c] {
                self.v[c] -= length - self.dist[c];
            }
        }
    }

    /// Flip the alternating path ending at `sink` back to `start`.
    fn augment(&mut self, start: usize, sink: usize) {
        let mut col = sink;
        loop {
            let row = self.via_row[col];
            self.row_of_col[col] = row;
            let previous = std::mem::replace(&mut self.col_of_row[row], col);
            if row == start {
                break;
            }
            col = previous;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, data: &[f64]) -> CostMatrix {
        CostMatrix::new(rows, cols, data.to_vec()).unwrap()
    }

    /// Exhaustive optimum over all injective maps of the smaller side into the larger one.
    fn brute_force(m: &CostMatrix, goal: Goal) -> f64 {
        fn go(m: &CostMatrix, t: bool, row: usize, used: &mut [bool], goal: Goal) -> f64 {
            let (n, k) = if t { (m.cols, m.rows) } else { (m.rows, m.cols) };
            if row == n {
                return 0.0;
            }
            let mut best = match goal {
                Goal::Minimize => f64::INFINITY,
                Goal::Maximize => f64::NEG_INFINITY,
            };
            for c in 0..k {
                if !used[c] {
                    used[c] = true;
                    let here = if t { m.get(c, row) } else { m.get(row, c) }.unwrap();
                    let total = here + go(m, t, row + 1, used, goal);
                    used[c] = false;
                    best = match goal {
                        Goal::Minimize => best.min(total),
                        Goal::Maximize => best.max(total),
                    };
                }
            }
            best
        }
        let t = m.rows > m.cols;
        let mut used = vec![false; m.rows.max(m.cols)];
        go(m, t, 0, &mut used, goal)
    }

    fn is_one_to_one(a: &Assignment, m: &CostMatrix) -> bool {
        let mut rows: Vec<_> = a.pairs().iter().map(|p| p.0).collect();
        let mut cols: Vec<_> = a.pairs().iter().map(|p| p.1).collect();
        let sorted = rows.windows(2).all(|w| w[0] < w[1]);
        rows.dedup();
        cols.sort_unstable();
        cols.dedup();
        sorted
            && a.len() == m.rows.min(m.cols)
            && rows.len() == a.len()
            && cols.len() == a.len()
            && a.pairs().iter().all(|&(r, c)| r < m.rows && c < m.cols)
    }

    #[test]
    fn square_matrix_finds_the_cheapest_permutation() {
        let m = matrix(3, 3, &[4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0]);
        let a = solve(&m, Goal::Minimize);
        assert_eq!(a.pairs(), &[(0, 1), (1, 0), (2, 2)]);
        assert_eq!(a.total(&m), 5.0);
    }

    #[test]
    fn maximize_finds_the_largest_total() {
        let m = matrix(2, 2, &[1.0, 2.0, 3.0, 4.0]);
        let a = solve(&m, Goal::Maximize);
        assert_eq!(a.total(&m), 5.0);
        assert!(is_one_to_one(&a, &m));
    }

    #[test]
    fn wide_and_tall_matrices_assign_the_smaller_side_completely() {
        let wide = matrix(2, 3, &[1.0, 2.0, 3.0, 4.0, 1.0, 5.0]);
        let a = solve(&wide, Goal::Minimize);
        assert_eq!(a.pairs(), &[(0, 0), (1, 1)]);
        let tall = matrix(3, 2, &[1.0, 4.0, 2.0, 1.0, 5.0, 3.0]);
        let b = solve(&tall, Goal::Minimize);
        assert_eq!(b.pairs(), &[(0, 0), (1, 1)]);
    }

    #[test]
    fn empty_dimensions_give_an_empty_assignment() {
        for (r, c) in [(0, 0), (0, 4), (3, 0)] {
            assert!(solve(&matrix(r, c, &[]), Goal::Minimize).is_empty());
        }
    }

    #[test]
    fn constant_matrix_gives_the_identity_like_scipy() {
        let m = CostMatrix::from_fn(4, 4, |_, _| 1.0).unwrap();
        assert_eq!(solve(&m, Goal::Minimize).pairs(), &[(0, 0), (1, 1), (2, 2), (3, 3)]);
    }

    #[test]
    fn non_finite_or_huge_costs_are_rejected_with_their_position() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e101] {
            let e = CostMatrix::new(2, 2, vec![0.0, 1.0, bad, 3.0]).unwrap_err();
            assert!(e.what().contains("(1, 0)"), "{}", e.what());
        }
        assert!(CostMatrix::new(2, 2, vec![0.0; 3]).is_err());
    }

    #[test]
    fn small_random_matrices_are_solved_optimally() {
        // A tiny LCG keeps the test self-contained and reproducible.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state >> 33
        };
        for case in 0..3000 {
            let rows = 1 + (next() % 5) as usize;
            let cols = 1 + (next() % 5) as usize;
            let ties = case % 2 == 0;
            let m = CostMatrix::from_fn(rows, cols, |_, _| {
                if ties { (next() % 3) as f64 } else { (next() % 10_000) as f64 / 997.0 - 3.0 }
            })
            .unwrap();
            for goal in [Goal::Minimize, Goal::Maximize] {
                let a = solve(&m, goal);
                assert!(is_one_to_one(&a, &m), "case {case}: {a:?}");
                let best = brute_force(&m, goal);
                assert!((a.total(&m) - best).abs() < 1e-9, "case {case} {goal:?}");
            }
        }
    }
}
