//! The key/value cache of incremental decoding: one preallocated [B, Hkv, capacity, D] buffer
//! pair per layer, filled left to right, so a decode step copies only the new column.
//!
//! Two ways to fill it. In lockstep every row writes the same column (a left-padded batch that
//! started together). With per-row columns ([`KvCache::set_columns`]) each row is a slot of the
//! continuous-batching engine (`crate::generate`): a row holds its own sequence from column 0
//! (copied in from a prefill by [`KvCache::put_prefix`]) and writes its next token at its own
//! length; the attention mask says which columns each row may see.

use tch::{Device, Kind, Tensor};

use crate::config::TextConfig;

#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
    capacity: i64,
    /// Per-row write columns of the next step ([B, Hkv, 1, D] index), when rows are slots.
    columns: Option<Tensor>,
}

impl KvCache {
    pub fn new(c: &TextConfig, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, c.num_key_value_heads, capacity, c.head_dim];
        let layers = (0..c.num_hidden_layers)
            .map(|_| (Tensor::zeros(shape, (kind, device)), Tensor::zeros(shape, (kind, device))))
            .collect();
        KvCache { layers, len: 0, capacity, columns: None }
    }

    /// Rows as slots: the next step writes row `i`'s key and value at column `columns[i]`, and
    /// attention sees columns `0..width` (`width` > every column; the mask hides the rest).
    pub(crate) fn set_columns(&mut self, columns: &[i64], width: i64) {
        let (k, _) = &self.layers[0];
        let s = k.size();
        let index = Tensor::from_slice(columns)
            .to_device(k.device())
            .view([s[0], 1, 1, 1])
            .expand([s[0], s[1], 1, s[3]], false);
        self.columns = Some(index);
        self.len = width - 1;
    }

    /// Copy row `from_row` of `src`, columns `from..from + n`, into row `row` columns `0..n`
    /// (a prefilled prompt becoming a slot's sequence), in every layer.
    pub(crate) fn put_prefix(&mut self, row: i64, src: &KvCache, from_row: i64, from: i64, n: i64) {
        for ((k, v), (sk, sv)) in self.layers.iter_mut().zip(&src.layers) {
            k.get(row).narrow(1, 0, n).copy_(&sk.get(from_row).narrow(1, from, n));
            v.get(row).narrow(1, 0, n).copy_(&sv.get(from_row).narrow(1, from, n));
        }
    }

    /// Make the cache `rows` rows of `capacity` columns (neither smaller than now): the cached
    /// values keep their places and the new room is zero.
    pub(crate) fn grow(&mut self, rows: i64, capacity: i64) {
        for (k, v) in &mut self.layers {
            for t in [k, v] {
                let s = t.size();
                if s[0] == rows && s[2] == capacity {
                    continue;
                }
                let bigger = Tensor::zeros([rows, s[1], capacity, s[3]], (t.kind(), t.device()));
                bigger.narrow(0, 0, s[0]).narrow(2, 0, s[2]).copy_(t);
                *t = bigger;
            }
        }
        self.capacity = capacity;
        self.columns = None;
    }

    /// Keep only the rows `rows` (an int64 index), in that order.
    pub(crate) fn keep_rows(&mut self, rows: &Tensor) {
        for (k, v) in &mut self.layers {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
    }

    /// Tokens already cached (in lockstep the same for every row, padding included; with
    /// per-row columns, the widest row's before the step).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Store the new k, v [B, Hkv, n, D] of `layer` after the cached ones and return the whole
    /// cached prefix including them. [`KvCache::advance`] commits the step once all layers ran.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let n = k.size()[2];
        let (ck, cv) = &mut self.layers[layer];
        if let Some(index) = &self.columns {
            // Rows as slots: one new column per row, each at its own place.
            let _ = ck.scatter_(2, index, k);
            let _ = cv.scatter_(2, index, v);
            return (ck.narrow(2, 0, self.len + 1), cv.narrow(2, 0, self.len + 1));
        }
        ck.narrow(2, self.len, n).copy_(k);
        cv.narrow(2, self.len, n).copy_(v);
        (ck.narrow(2, 0, self.len + n), cv.narrow(2, 0, self.len + n))
    }

    pub(crate) fn advance(&mut self, n: i64) {
        if self.columns.is_none() {
            self.len += n;
        }
    }
}
